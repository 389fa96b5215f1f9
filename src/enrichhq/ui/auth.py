"""UI login: a signed, HttpOnly, SameSite session cookie, and a CSRF token on every form."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import Request

from enrichhq import exceptions
from enrichhq.settings import Settings

SESSION_HOURS = 12


class LoginRequired(exceptions.EnrichHQError):
    """A page asked for without a session: the app redirects to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__("log in first")
        self.next_url = next_url


class CsrfError(exceptions.EnrichHQError):
    """A form posted without the session's CSRF token."""


def session_options(settings: Settings) -> dict[str, Any]:
    """SessionMiddleware's options: signed with a key derived from the callback secret; HttpOnly."""
    key = hmac.new(settings.callback_secret(), b"enrichhq-ui-session", hashlib.sha256).hexdigest()
    return {
        "secret_key": key,
        "session_cookie": "enrichhq_session",
        "max_age": SESSION_HOURS * 3600,
        "same_site": "strict",
        "https_only": (settings.enrichhq_public_url or "").startswith("https://"),
    }


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def require_user(request: Request) -> None:
    """Let logged-in users through; send everyone else to the login page."""
    if not request.session.get("user"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(quote(target, safe="/?=&"))


async def require_csrf(request: Request) -> None:
    """Every state-changing request carries the session's token (form field or X-CSRF-Token)."""
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token")
    form = None
    if given is None:
        form = await request.form()
        value = form.get("csrf")
        given = value if isinstance(value, str) else None
    if not expected or not given or not hmac.compare_digest(str(expected), given):
        if form is not None:
            await form.close()  # uploaded files of a refused form are let go at once
        raise CsrfError("the form expired or came from elsewhere: reload the page and try again")


def check_password(settings: Settings, given: str) -> bool:
    """Whether a login attempt has the UI password."""
    password, _ = settings.ui_password()
    return hmac.compare_digest(password.encode(), given.encode())

"""UI login: a signed, HttpOnly, SameSite session cookie, and a CSRF token on every form."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import Request

from enrichhq import exceptions
from enrichhq.db import engines, logins
from enrichhq.settings import Settings

SESSION_HOURS = 12
#: login attempts allowed per client address in each window.
LOGIN_LIMIT = 10
#: ... and for the account from all addresses together: far above one address's, so a single
#: client guessing cannot lock the admin out, while many guessing together are still held back.
ACCOUNT_LIMIT = 100
LOGIN_WINDOW_S = 60.0


class LoginRequired(exceptions.EnrichHQError):
    """A page asked for without a session: the app redirects to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__("log in first")
        self.next_url = next_url


class TooManyLogins(exceptions.EnrichHQError):
    """Too many login attempts from one address or for the account: wait, then try again."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"Too many login attempts: try again in {self.retry_after} s.")


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


async def require_user(request: Request) -> None:
    """Let users whose session is alive on the server through; send everyone else to the login page."""
    session_id = request.session.get("sid")
    if request.session.get("user") and isinstance(session_id, str):
        async with request.app.state.services.dbs.begin("hq") as conn:
            if await logins.session_alive(conn, session_id):
                return
    request.session.pop("user", None)
    request.session.pop("sid", None)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(quote(target, safe="/?=&"))


async def log_in(dbs: engines.Databases, settings: Settings, address: str, password: str) -> str | None:
    """A new session's id for the right password, None for a wrong one; TooManyLogins past the limit.

    Every attempt is counted before the password is looked at, per address and for the account,
    so neither a fast client nor many clients guess on.
    """
    limits = {f"address:{address}": LOGIN_LIMIT, "account:admin": ACCOUNT_LIMIT}
    async with dbs.begin("hq") as conn:
        counted = {key: await logins.count_attempt(conn, key, window_s=LOGIN_WINDOW_S) for key in limits}
    waits = [left for key, (attempts, left) in counted.items() if attempts > limits[key]]
    if waits:
        raise TooManyLogins(max(waits))
    if not check_password(settings, password):
        return None
    async with dbs.begin("hq") as conn:
        await logins.clear_attempts(conn, list(limits))
        return await logins.open_session(conn, SESSION_HOURS * 3600)


async def log_out(dbs: engines.Databases, request: Request) -> None:
    """End the session on the server and in the cookie."""
    session_id = request.session.get("sid")
    if isinstance(session_id, str):
        async with dbs.begin("hq") as conn:
            await logins.close_session(conn, session_id)
    request.session.clear()


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

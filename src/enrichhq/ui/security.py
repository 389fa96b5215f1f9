"""Headers every answer carries so a browser holds the UI to its own origin, and Secure cookies on https."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Scripts only from our own files (no inline handlers); inline style attributes stay allowed for the
# progress bar's width and htmx's indicator styles, which carry no script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """Adds the headers above to every HTTP answer, and Secure to cookies set over https."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap `send` to amend the answer's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def amend(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, _secure(value) if https and name == b"set-cookie" else value)
                    for name, value in message.get("headers", [])
                ]
                present = {name for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, amend)


def _secure(cookie: bytes) -> bytes:
    """A Set-Cookie value with the Secure attribute (once)."""
    attributes = {part.strip().lower() for part in cookie.split(b";")[1:]}
    return cookie if b"secure" in attributes else cookie + b"; Secure"

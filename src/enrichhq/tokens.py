"""Callback tokens: HMAC-signed, bound to a batch, a company and a workflow, with an expiry.

An async provider gets one with each request and hands it back with its result; the
receiver trusts the ids inside a token only when the signature holds and it has not expired.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import time
from dataclasses import dataclass

from enrichhq import exceptions


class TokenError(exceptions.EnrichHQError):
    """A callback token that is malformed, forged or expired (`reason` says which)."""

    def __init__(self, reason: str, message: str, claims: Claims | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        #: set for an expired but genuine token, so the refusal can be logged against its item.
        self.claims = claims


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token vouches for."""

    batch_id: str
    company_id: str
    workflow_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, claims: Claims) -> str:
    """A token for these claims."""
    payload = _b64(
        json.dumps(
            {"b": claims.batch_id, "c": claims.company_id, "w": claims.workflow_id, "e": claims.expires_at},
            separators=(",", ":"),
        ).encode()
    )
    mac = hmac.digest(secret, payload.encode(), "sha256")
    return f"{payload}.{_b64(mac)}"


def issue(secret: bytes, batch_id: str, company_id: str, workflow_id: str, ttl_s: float) -> str:
    """A token valid for ttl_s seconds from now."""
    return sign(secret, Claims(batch_id, company_id, workflow_id, math.ceil(time.time() + ttl_s)))


def verify(secret: bytes, token: str, *, now: float | None = None) -> Claims:
    """The claims of a genuine, unexpired token; TokenError otherwise."""
    payload, dot, mac = token.strip().partition(".")
    if not dot or not payload or not mac:
        raise TokenError("malformed", "callback token is malformed")
    try:
        given = _unb64(mac)
        expected = hmac.digest(secret, payload.encode(), "sha256")  # one-shot: a callback is one verify
    except (ValueError, TypeError):
        raise TokenError("malformed", "callback token is malformed") from None
    if not hmac.compare_digest(given, expected):
        raise TokenError("forged", "callback token signature does not match")
    try:
        raw = json.loads(_unb64(payload))
        claims = Claims(str(raw["b"]), str(raw["c"]), str(raw["w"]), int(raw["e"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed", "callback token is malformed") from None
    if claims.expires_at < (time.time() if now is None else now):
        raise TokenError(
            "expired", "callback token has expired: the item's callback deadline has passed", claims
        )
    return claims

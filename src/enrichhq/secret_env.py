"""Secrets a step's config may name: environment variables under an operator-allowed prefix.

A config row is data that users edit (in the UI, through the API), so it must never be able to
send enrichhq's own key, its database URLs or ENRICHHQ_SECRET to a URL it chose. It may only
name variables whose names carry a prefix from ENRICHHQ_SECRET_ENV_PREFIXES (default
API_, N8N_, CLAY_, WEBHOOK_); names of enrichhq's own settings are refused whatever the prefixes.
It serves `auth_env` of n8n and Clay and the Zenrows key's masking; it is the one rule any
further provider option that reads a secret should call, and `scrub` the one mask for texts
(errors, log rows) that may hold a secret a call sent.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterable

from enrichhq import exceptions
from enrichhq.settings import Settings

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: never readable, whatever prefixes the operator allows (enrichhq's own settings and databases).
_OWN = ("ENRICHHQ_", "HQ_DATABASE", "WORKSPACE_DATABASE", "DATABASE_URL", "REDIS_URL", "PG")


def problem(name: str, settings: Settings) -> str | None:
    """Why `name` may not be read as a secret, or None when it may (set or not)."""
    prefixes = settings.secret_env_prefixes()
    if not _NAME.match(name):
        return f"{name!r} is not an environment variable name (upper-case letters, digits and _)"
    if name.startswith(_OWN) or not prefixes or not name.startswith(prefixes):
        allowed = ", ".join(p + "*" for p in prefixes) or "none (ENRICHHQ_SECRET_ENV_PREFIXES is empty)"
        return (
            f"${name} cannot be read by a step: secrets must live in variables named {allowed} "
            "(set ENRICHHQ_SECRET_ENV_PREFIXES to allow other prefixes)"
        )
    return None


def check(name: str, settings: Settings, *, what: str) -> None:
    """Raise ConfigError unless `name` is an allowed variable that is set (`what` names the option)."""
    reason = problem(name, settings)
    if reason is not None:
        raise exceptions.ConfigError(f"{what}: {reason}")
    if not os.environ.get(name):
        raise exceptions.ConfigError(
            f"{what}: ${name} is not set; export it (secrets live in the environment, never in config rows)"
        )


def read(name: str, settings: Settings, *, what: str) -> str:
    """The value of an allowed, set secret variable (ConfigError otherwise)."""
    check(name, settings, what=what)
    return os.environ[name]


#: a shorter secret is not masked in free text: replaced everywhere, a two-letter key would turn
#: every such pair of letters of an error message into `***` (and tell where it was).
MIN_MASKED_LEN = 8
MASK = "***"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """The text with each secret masked, as sent and as it reads URL-encoded (in a query string)."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_MASKED_LEN}, key=len, reverse=True):
        text = text.replace(secret, MASK)
        encoded = urllib.parse.quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, MASK)
        plus = urllib.parse.quote_plus(secret, safe="")
        if plus not in (secret, encoded):
            text = text.replace(plus, MASK)
        # As a JSON string writes it: escaped, and with `\/` as PHP's encoder writes a slash.
        escaped = json.dumps(secret)[1:-1]
        for form in {escaped, escaped.replace("/", "\\/")} - {secret}:
            text = text.replace(form, MASK)
    return text

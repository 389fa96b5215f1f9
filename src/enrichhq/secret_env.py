"""Secrets a step's config may name: environment variables under an operator-allowed prefix.

A config row is data that users edit (in the UI, through the API), so it must never be able to
send enrichhq's own key, its database URLs or ENRICHHQ_SECRET to a URL it chose. It may only
name variables whose names carry a prefix from ENRICHHQ_SECRET_ENV_PREFIXES (default
API_, N8N_, CLAY_, WEBHOOK_); names of enrichhq's own settings are refused whatever the prefixes.
One mechanism for every provider: `auth_env` of n8n/Clay, `{{ secrets.X }}` of http_api,
`api_key_env` of llm.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping

from enrichhq import exceptions
from enrichhq.settings import Settings

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: never readable, whatever prefixes the operator allows (enrichhq's own settings and databases).
_OWN = ("ENRICHHQ_", "HQ_DATABASE", "WORKSPACE_DATABASE", "DATABASE_URL", "REDIS_URL", "PG")
#: a secret shorter than this is not scrubbed from texts (it would mangle ordinary words).
_MIN_SCRUB = 4


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


class Secrets(Mapping[str, str]):
    """`secrets` in templates: reading a name reads the variable if allowed, else fails with why."""

    def __init__(self, settings: Settings, *, what: str) -> None:
        self._settings = settings
        self._what = what
        self.used: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        value = read(name, self._settings, what=self._what)
        self.used[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.used)

    def __len__(self) -> int:
        return len(self.used)


def scrub(text: str, values: Iterable[str]) -> str:
    """`text` with every secret value in it replaced by `***` (for errors, logs and stored answers)."""
    for value in sorted({v for v in values if len(v) >= _MIN_SCRUB}, key=len, reverse=True):
        text = text.replace(value, "***")
    return text

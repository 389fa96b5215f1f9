"""The workflow-specific functions (seed: scrape_homepage_v1 and friends), one per provider.

A provider knows HOW to get data for one company and nothing about where it goes.
Built-ins and third-party providers are found through the `enrichhq.providers`
entry point group (the built-ins are listed in pyproject.toml, once), so a new provider is a
package, not a change here.
"""

from __future__ import annotations

from importlib import metadata

from enrichhq import exceptions
from enrichhq.functions.base import Provider

__all__ = ["GROUP", "Provider", "available", "load", "register"]

GROUP = "enrichhq.providers"

_REGISTERED: dict[str, type[Provider]] = {}


def register(name: str, provider: type[Provider]) -> None:
    """Make a provider class available under a name from code (embedding, tests, benchmarks)."""
    _REGISTERED[name] = provider


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of every provider this installation can run."""
    return sorted(set(_entry_points()) | set(_REGISTERED))


def load(name: str) -> type[Provider]:
    """The provider class for a config row's `provider` value."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    entry = _entry_points().get(name)
    if entry is None:
        known = available()
        if not known:  # not even the built-ins: their entry points come with the installed package
            raise exceptions.ConfigError(
                f"unknown provider {name!r}: no providers are registered; install enrichhq "
                "(pip install enrichhq, or pip install -e . in a checkout) so its entry points exist"
            )
        raise exceptions.ConfigError(f"unknown provider {name!r}; available: {', '.join(known)}")
    provider = entry.load()
    if not (isinstance(provider, type) and issubclass(provider, Provider)):
        raise exceptions.ConfigError(f"entry point {entry.value!r} is not an enrichhq Provider")
    return provider

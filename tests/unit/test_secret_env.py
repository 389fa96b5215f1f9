"""Which environment variables a config row may read as a secret."""

from __future__ import annotations

import urllib.parse

import pytest

from enrichhq import exceptions, secret_env
from enrichhq.settings import Settings


@pytest.mark.parametrize(
    "name", ["ENRICHHQ_SECRET", "ENRICHHQ_API_KEY", "HQ_DATABASE_URL", "PGPASSWORD", "HOME", "api_x", "A B"]
)
def test_names_outside_the_allowed_prefixes_are_refused(name: str) -> None:
    assert secret_env.problem(name, Settings()) is not None


def test_own_settings_are_refused_even_when_their_prefix_is_allowed() -> None:
    settings = Settings(enrichhq_secret_env_prefixes="ENRICHHQ_,HQ_")
    assert secret_env.problem("ENRICHHQ_SECRET", settings) is not None
    assert secret_env.problem("HQ_DATABASE_URL", settings) is not None


def test_an_allowed_name_is_read_and_an_unset_one_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_HUNTER_KEY", "hunter-secret-1")
    monkeypatch.delenv("API_MISSING", raising=False)
    settings = Settings()
    assert secret_env.read("API_HUNTER_KEY", settings, what="headers") == "hunter-secret-1"
    with pytest.raises(exceptions.ConfigError, match=r"\$API_MISSING is not set"):
        secret_env.read("API_MISSING", settings, what="headers")
    with pytest.raises(exceptions.ConfigError, match="ENRICHHQ_SECRET_ENV_PREFIXES"):
        secret_env.read("ENRICHHQ_SECRET", settings, what="headers")


def test_the_operator_chooses_the_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUNTER_KEY", "k-123456")
    assert secret_env.problem("HUNTER_KEY", Settings()) is not None
    assert secret_env.problem("HUNTER_KEY", Settings(enrichhq_secret_env_prefixes="hunter_")) is None
    assert secret_env.problem("API_X", Settings(enrichhq_secret_env_prefixes="")) is not None


def test_scrub_masks_a_secret_as_sent_and_url_encoded() -> None:
    secret = "k3y/with+odd chars&="
    text = f"GET https://api.example/x?key={urllib.parse.quote(secret, safe='')}&q=1 said {secret}; form {urllib.parse.quote_plus(secret)}"
    scrubbed = secret_env.scrub(text, [secret])
    assert secret not in scrubbed
    assert urllib.parse.quote(secret, safe="") not in scrubbed
    assert urllib.parse.quote_plus(secret) not in scrubbed
    assert scrubbed.count(secret_env.MASK) == 3


def test_scrub_leaves_short_values_alone() -> None:
    """A one-letter secret masked everywhere would mangle the message and point at the key."""
    assert secret_env.scrub("an error about a thing", ["a"]) == "an error about a thing"


def test_scrub_masks_the_longer_of_two_overlapping_secrets_whole() -> None:
    assert secret_env.scrub("token abcdefgh12345678", ["abcdefgh", "abcdefgh12345678"]) == "token ***"

"""Every error enrichhq raises on purpose derives from `EnrichHQError`.

The message of each is written for the user: it says what is wrong and what to do,
and never contains a secret (database passwords and API keys are masked first).
"""

from __future__ import annotations

from typing import Any


class EnrichHQError(Exception):
    """Base class: a problem the user can fix, reported as one line."""


class InputError(EnrichHQError):
    """Bad input from the user: a CSV, a flag, a JSON body."""


class ConfigError(EnrichHQError):
    """A workflow config that cannot be run as it stands."""


class IdempotencyConflict(EnrichHQError):
    """An Idempotency-Key sent again with another request than the one it was first used with."""


class NotFound(EnrichHQError):
    """A workflow, batch, company or table that does not exist."""


class DatabaseError(EnrichHQError):
    """A database that cannot be reached or refused an operation."""


class Unreachable(DatabaseError):
    """A database that cannot be reached right now (down, restarting): worth waiting for."""


class DatabaseConfigError(ConfigError, DatabaseError):
    """A database URL the server refuses (no such database, role or password): waiting will not help."""


class ProviderError(EnrichHQError):
    """A provider answered with an error (or not at all).

    `retryable` tells the executor whether another attempt may succeed; `stop_batch`
    that no other company will succeed either (out of credits, invalid key).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        stop_batch: bool = False,
        retry_after: float | None = None,
        cost: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        #: the provider's HTTP status, when it answered at all.
        self.status = status
        self.retryable = retryable
        self.stop_batch = stop_batch
        self.retry_after = retry_after
        self.cost = cost
        #: a waterfall's attempts before it gave up: (provider, outcome, cost).
        self.trail: tuple[tuple[str, str, float | None], ...] = ()
        #: what the provider said about the call beside its error (its request id...), for the log row.
        self.details: dict[str, Any] | None = None


class AuthError(EnrichHQError):
    """A request without valid credentials."""


class StorageError(EnrichHQError):
    """A result that could not be written to its destination table."""


class NotOurs(EnrichHQError):
    """An item this run took is no longer its own (taken over, cancelled): its call does not go out."""

"""Named queries on HQ's `enrichhq_idempotency_keys`: a retried run request gets the first batch.

A key is taken in the transaction that creates its batch, as that transaction's first write: a
request sent twice at once waits at this row for the first to end, then finds its batch; if the
first rolled back, the key is free again and the second takes it.

With the key is stored a fingerprint of the request it came with (as the IETF draft "The
Idempotency-Key HTTP Header Field" and Stripe do): the same key with another body is refused
rather than answered, silently, with a batch that is not what the client asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq import exceptions
from enrichhq.db import dialect
from enrichhq.db.common import now
from enrichhq.db.schema import idempotency_keys


@dataclass(frozen=True, slots=True)
class Key:
    """An Idempotency-Key as stored, with the fingerprint of the request it came with."""

    #: the stored key: the route, then the client's key (routes never share keys).
    key: str
    #: the key as the client sent it, for messages.
    given: str
    #: `fingerprint` of the request.
    fingerprint: str

    def part(self, name: str) -> Key:
        """The key of one part of the request (a step of a multi-step run): a batch of its own."""
        return Key(f"{self.key} {name}", self.given, self.fingerprint)


def scoped(scope: str, key: str) -> str:
    """The stored key: the route it was sent to, then the client's key (routes never share keys)."""
    return f"{scope} {key}"


def fingerprint(method: str, path: str, body: object) -> str:
    """SHA-256 of the request as canonical JSON: method, path and the parsed body, keys sorted.

    The parsed body (defaults filled in), not its bytes: the same request sent with its keys in
    another order, other spacing or a default spelled out is the same request. Only the digest is
    kept, never the body.
    """
    canonical = json.dumps(
        {"method": method, "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def take(conn: AsyncConnection, key: Key, batch_id: str) -> str | None:
    """Take the key for a batch about to be created; None if taken, else the batch id of the
    request that took it first (committed: a transaction still holding it is waited for).

    IdempotencyConflict when that request was another one (its fingerprint differs); a key
    stored before fingerprints were (NULL) is answered with its batch, as it was then.

    INSERT ... ON CONFLICT DO NOTHING rather than catching the unique violation: PostgreSQL
    would abort the transaction with it, and the first batch must still be read in this one.
    """
    source = sa.select(
        sa.literal(key.key, sa.Text),
        sa.literal(batch_id, idempotency_keys.c.batch_id.type),
        sa.literal(now(), idempotency_keys.c.created_at.type),
        sa.literal(key.fingerprint, sa.Text),
    )
    stmt = dialect.insert_unless_taken(
        conn.dialect,
        idempotency_keys,
        ["key", "batch_id", "created_at", "fingerprint"],
        source,
        key=["key"],
    ).returning(idempotency_keys.c.key)
    # RETURNING, not rowcount: the driver may not count the rows of an INSERT ... SELECT.
    if (await conn.execute(stmt)).first() is not None:
        return None
    first = (
        await conn.execute(
            sa.select(idempotency_keys.c.batch_id, idempotency_keys.c.fingerprint).where(
                idempotency_keys.c.key == key.key
            )
        )
    ).one()
    if first.fingerprint is not None and first.fingerprint != key.fingerprint:
        raise exceptions.IdempotencyConflict(
            f"Idempotency-Key {key.given!r} was first used with a different request body "
            f"(batch {first.batch_id}); use a new key for a new request"
        )
    return str(first.batch_id)


async def release(conn: AsyncConnection, key: Key) -> None:
    """Free a key whose request did not go through, so sending it again runs it."""
    await conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.key == key.key))

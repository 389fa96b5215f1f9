"""Named queries on the UI's sessions and on login attempts (HQ), on the database's clock."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from enrichhq.db import dialect, types
from enrichhq.db.schema import login_attempts, ui_sessions


async def count_attempt(conn: AsyncConnection, key: str, *, window_s: float) -> tuple[int, float]:
    """Count one login attempt for a key; (attempts in its window so far, seconds the window has left).

    One atomic UPDATE ... RETURNING per key, so attempts made at once are each counted.
    """
    await conn.execute(
        dialect.upsert(conn.dialect, login_attempts, ["key"], []).values(
            key=key, window_start=types.epoch_now(), attempts=0
        )
    )
    clock = types.epoch_now()
    expired = login_attempts.c.window_start < clock - window_s
    row = (
        await conn.execute(
            sa.update(login_attempts)
            .where(login_attempts.c.key == key)
            .values(
                attempts=sa.case((expired, 1), else_=login_attempts.c.attempts + 1),
                window_start=sa.case((expired, clock), else_=login_attempts.c.window_start),
            )
            .returning(login_attempts.c.attempts, login_attempts.c.window_start + window_s - clock)
        )
    ).one()
    return int(row[0]), max(0.0, float(row[1]))


async def clear_attempts(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """Forget the attempts of these keys (a login succeeded)."""
    await conn.execute(sa.delete(login_attempts).where(login_attempts.c.key.in_(keys)))


async def open_session(conn: AsyncConnection, ttl_s: float) -> str:
    """A new session's id, valid for ttl_s; sessions already expired are removed."""
    await conn.execute(sa.delete(ui_sessions).where(ui_sessions.c.expires_at < types.epoch_now()))
    session_id = secrets.token_urlsafe(32)
    await conn.execute(sa.insert(ui_sessions).values(id=session_id, expires_at=types.epoch_now() + ttl_s))
    return session_id


async def session_alive(conn: AsyncConnection, session_id: str) -> bool:
    """Whether a session exists and has not expired."""
    found = await conn.scalar(
        sa.select(sa.literal(1)).where(
            ui_sessions.c.id == session_id, ui_sessions.c.expires_at > types.epoch_now()
        )
    )
    return found is not None


async def close_session(conn: AsyncConnection, session_id: str) -> None:
    """End a session (logout): its cookie is worth nothing from now on."""
    await conn.execute(sa.delete(ui_sessions).where(ui_sessions.c.id == session_id))

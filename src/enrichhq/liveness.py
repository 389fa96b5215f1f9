"""Whether the process named by a batch's lease is still there, and who this process is.

The answer only chooses which owner value a lease is taken over from: the compare-and-swap in
`db.batches.take_lease` decides who gets it. A pid can be checked on this host only; elsewhere
the heartbeat's age is the one sign of life.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Lease:
    """One run's hold on a batch: a token of its own, and the host and pid it runs in.

    The token is per run, not per process: two runs of one batch inside one `serve` are two
    owners, and only one of them gets the lease.
    """

    owner: str
    host: str
    pid: int

    @classmethod
    def new(cls) -> Lease:
        """A lease token for a run of this process."""
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:12]}", host, pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts as alive)."""
    if pid <= 0:  # 0 and negative pids name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def gone(host: str | None, pid: int | None) -> bool:
    """Known to be dead: it ran on this host and its pid is no more."""
    return host == socket.gethostname() and pid is not None and not pid_alive(pid)


def seconds_since(stamp: datetime | None, now: datetime) -> float | None:
    """Seconds from a stored time to now (SQLite gives naive UTC times back)."""
    if stamp is None:
        return None
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return max(0.0, (now - aware).total_seconds())

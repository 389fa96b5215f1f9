"""Real parts for the distributed tests: `enrichhq worker` processes, a fault-injecting site stub,
a PostgreSQL server of the test's own (to restart) and PgBouncer in transaction mode."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.live import free_port

ENRICHHQ = str(Path(sys.executable).with_name("enrichhq"))
#: Debian's pgbouncer (package pgbouncer), which .ci/run installs.
PGBOUNCER = "/usr/sbin/pgbouncer"


class FaultSite:
    """Homepages at /sites/{domain}/ with faults on demand; counts calls and calls in flight.

    delay: seconds per answer; limit: answer 429 (Retry-After 1) above this many calls in flight;
    error_rate: share of calls answered 500 or left hanging past the client's timeout;
    on_call: called with the domain before answering (a test may kill the caller there).
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        limit: int | None = None,
        error_rate: float = 0.0,
        hang_s: float = 2.0,
        on_call: Callable[[str], None] | None = None,
    ) -> None:
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.delay, self.limit, self.error_rate, self.hang_s = delay, limit, error_rate, hang_s
        self.on_call = on_call
        self.random = random.Random(7)
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                site.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sites/{{domain}}/"

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        domain = request.path.strip("/").split("/")[-1]
        with self.lock:
            self.calls[domain] += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            crowded = self.limit is not None and self.in_flight > self.limit
            roll = self.random.random()
        try:
            if self.on_call is not None:
                self.on_call(domain)
            if crowded:
                self.answer(request, 429, b"too many", {"Retry-After": "1"})
                return
            if roll < self.error_rate / 2:
                self.answer(request, 500, b"internal error")
                return
            if roll < self.error_rate:
                time.sleep(self.hang_s)  # past the client's timeout
            time.sleep(self.delay)
            body = f"<html><head><title>{domain}</title></head><body>{domain}</body></html>".encode()
            self.answer(request, 200, body)
        finally:
            with self.lock:
                self.in_flight -= 1

    def answer(
        self, request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        with self.lock:
            self.statuses[status] += 1
        try:
            request.send_response(status)
            request.send_header("Content-Type", "text/html")
            request.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            pass  # the caller gave up (timeout) or died

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Fleet:
    """`enrichhq worker` processes on one HQ; their output goes to files for the failure report."""

    def __init__(self, environ: dict[str, str], logs: Path) -> None:
        self.environ = environ
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 8, *extra: str) -> subprocess.Popen[bytes]:
        # The child keeps its own copy of the file descriptor.
        with open(self.logs / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [ENRICHHQ, "worker", "--concurrency", str(concurrency), *extra],
                env=self.environ,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def text(self) -> str:
        """Every worker's whole output."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log")))

    def output(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.glob("worker-*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pg_bin() -> Path | None:
    """The PostgreSQL server binaries (Debian's layout), if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class OwnPostgres:
    """A PostgreSQL server of the test's own, on a free port, that the test may restart."""

    def __init__(self) -> None:
        binaries = pg_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = binaries
        self.dir = Path(tempfile.mkdtemp(prefix="enrichhq-pg-"))
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self.run(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def pgbouncer_binary() -> str | None:
    """Debian's pgbouncer, or one on PATH, if installed."""
    return shutil.which("pgbouncer") or (PGBOUNCER if Path(PGBOUNCER).exists() else None)


class PgBouncer:
    """Debian's pgbouncer in transaction mode (as Supabase's pooler on 6543) in front of a server."""

    def __init__(self, host: str, port: int, user: str = "postgres", password: str | None = None) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (Debian package pgbouncer)")
        self.user = user
        secret = f" password={password}" if password else ""
        self.dir = Path(tempfile.mkdtemp(prefix="enrichhq-pgbouncer-"))
        self.port = free_port()
        config = self.dir / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={host} port={port} user={user}{secret}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = any\npool_mode = transaction\n"
            "max_client_conn = 200\ndefault_pool_size = 20\n"
            "ignore_startup_parameters = extra_float_digits,options,statement_timeout\n"
            f"logfile = {self.dir / 'log'}\npidfile = {self.dir / 'pid'}\n"
        )
        prefix = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(config, "postgres", "postgres")
            prefix = ["runuser", "-u", "postgres", "--"]
        self.proc = subprocess.Popen(
            [*prefix, binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"pgbouncer did not start: {(self.dir / 'log').read_text(errors='replace')[-500:]}"
        )

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

"""Setting up and serving: `init`, `demo`, `serve`, `worker`."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from enrichhq import exceptions
from enrichhq.cli.common import app, command, err, out, run

if TYPE_CHECKING:
    from enrichhq import settings


@command(app)
def init() -> None:
    """Create or upgrade the HQ schema (idempotent; keeps the seed's existing tables and rows)."""
    from enrichhq import settings
    from enrichhq.db import migrate, urls

    conf = settings.load()
    revision = migrate.upgrade(conf.resolved_hq_url())
    run(lambda dbs: dbs.check())
    out.print(f"HQ schema at revision {revision} in {urls.mask(conf.resolved_hq_url())}")
    out.print(f"Workspace database: {urls.mask(conf.resolved_workspace_url())}")


@command(app)
def demo(
    data_dir: Annotated[Path, typer.Option(help="where the demo's SQLite files go")] = Path(".enrichhq-demo"),
) -> None:
    """A full run on SQLite against sample sites served on 127.0.0.1: no account, no internet."""
    import asyncio

    from enrichhq import demo as demo_module  # its sample servers load only for the demo

    asyncio.run(demo_module.run(data_dir, out))


@command(app)
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=32, help="server processes sharing the port (more than 1 needs PostgreSQL for HQ)"
        ),
    ] = 1,
) -> None:
    """HTTP functions (/functions/v1), REST API (/api/v1, docs at /docs) and runs, in one process
    (or --workers processes: the receiver's callbacks spread over them)."""
    # The web stack loads only for the commands that serve it, so the others start fast.
    import uvicorn

    from enrichhq import settings
    from enrichhq.api.app import create_app
    from enrichhq.db import migrate

    conf = settings.load()
    refuse_open_network(host, conf)
    if workers > 1 and conf.queue_dsn() is None:  # before anything is made or printed
        raise exceptions.InputError(
            f"--workers {workers} needs HQ on PostgreSQL (HQ_DATABASE_URL=postgresql://...): SQLite has one "
            "writer at a time, so more processes only wait for each other; run one"
        )
    _, generated = conf.api_key()
    if generated:
        kept = conf.enrichhq_data_dir.resolve() / "api-key"
        err.print(
            f"UI at http://{host}:{port}/ . No ENRICHHQ_API_KEY: a key was generated and kept in {kept}; "
            "it is the API's Bearer key and, unless ENRICHHQ_UI_PASSWORD is set, the UI password",
            highlight=False,
        )
    if not conf.enrichhq_public_url:
        conf = conf.model_copy(update={"enrichhq_public_url": f"http://{host}:{port}"})
    migrate.upgrade(conf.resolved_hq_url())
    if workers == 1:
        uvicorn.run(create_app(conf), host=host, port=port, log_level="info")
        return
    # Each process builds its app from the environment (uvicorn starts them from an import
    # string): the kept keys exist before they start, so none races another to create them, and
    # the public URL is the one this command settled on.
    conf.callback_secret()
    os.environ["ENRICHHQ_PUBLIC_URL"] = str(conf.enrichhq_public_url)
    uvicorn.run(
        "enrichhq.api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info"
    )


def refuse_open_network(host: str, conf: settings.Settings) -> None:
    """Listening beyond loopback needs ENRICHHQ_API_KEY: anyone on the network could run steps."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    has_key = conf.enrichhq_api_key is not None and bool(conf.enrichhq_api_key.get_secret_value())
    if not loopback and not has_key:
        raise exceptions.InputError(
            f"refusing to listen on {host} without ENRICHHQ_API_KEY: anyone on the network could run "
            "steps and read data; set the key, or listen on 127.0.0.1"
        )


@command(app)
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=2000, help="provider calls this worker makes at once, at most")
    ] = 32,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve /healthz and Prometheus /metrics on this port")
    ] = None,
) -> None:
    """Take batches from the queue on HQ (PostgreSQL); run one on each machine that should work.

    SIGTERM or Ctrl-C stops it gracefully: calls in flight end and are written, the rest goes
    back to the queue for the other workers.
    """
    import asyncio
    import logging

    from enrichhq import aio, settings
    from enrichhq.execution import worker as worker_module  # pgqueuer loads only for workers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider call is noise
    conf = settings.load()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker_module.work(conf, concurrency=concurrency, stop=stop, metrics_port=metrics_port)

    aio.run(go())
    err.print("worker stopped")

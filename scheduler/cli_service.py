"""`cloudsched keys ...` and `cloudsched serve`: the commands that run or administer a server.

Both read `CLOUDSCHED_*` settings, so `keys create` and `serve` started with the same
`CLOUDSCHED_DATA_DIR` share one embedded Redis (the second attaches to the first one's server).
Heavy imports (redis, FastAPI, uvicorn) happen inside the commands: `cloudsched solve` stays fast.
"""

from __future__ import annotations

import atexit
import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="API keys: create (printed once), list, revoke.", no_args_is_help=True)
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
ROLES = ("submitter", "ops", "admin")


def _store():
    from scheduler.settings import Settings
    from scheduler.store import open_store

    try:
        return open_store(Settings())
    except ValueError as exc:  # a CLOUDSCHED_* variable that cannot work
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(role: Annotated[str, typer.Option(help="submitter, ops or admin.")],
                team: Annotated[Optional[str], typer.Option(help="The submitter's team.")] = None,
                name: Annotated[Optional[str], typer.Option(help="Who holds the key (default: your user).")] = None,
                ) -> None:
    """Create a key and print it once: only its hash is stored."""
    from scheduler.errors import InvalidArgument

    if role not in ROLES:
        err.print(f"[red]error:[/red] --role must be one of {', '.join(ROLES)}, not {role!r}")
        raise typer.Exit(2)
    if role != "submitter" and team:
        err.print(f"[red]error:[/red] --team is for submitters; {role} sees every team")
        raise typer.Exit(2)
    try:
        key, who = _store().create_api_key(role, team, name or getpass.getuser(), actor=getpass.getuser())
    except InvalidArgument as exc:
        err.print(f"[red]error:[/red] --{exc.field}: {exc.message.split(': ', 1)[-1]}")
        raise typer.Exit(2) from None
    err.print(f"key for {who.name} ({who.role}{', team ' + who.team if who.team else ''}); "
              "it is shown only now — send it as 'Authorization: Bearer <key>':")
    sys.stdout.write(key + "\n")


@keys_app.command("list")
def keys_list() -> None:
    """Keys by id and first characters (never the key)."""
    table = Table(header_style="bold")
    for column in ("key id", "starts with", "role", "team", "name", "created"):
        table.add_column(column)
    for info in _store().list_api_keys():
        p = info.principal
        created = f"{info.created_at:%Y-%m-%d %H:%M}Z"
        table.add_row(info.key_id, info.prefix + "…", p.role, p.team or "-", p.name, created)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id from `keys list`.")]) -> None:
    """Revoke a key: requests with it get 401 (within 5 s: API processes remember a key that long)."""
    if not _store().revoke_api_key(key_id, actor=getpass.getuser()):
        err.print(f"[red]error:[/red] no key with id {key_id!r}")
        raise typer.Exit(1)
    err.print(f"revoked {key_id}")


def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
          workers: Annotated[int, typer.Option(min=1, max=64, help="API processes on the one port (uvicorn workers); "
                                                                    "about one per core.")] = 1,
          worker: Annotated[bool, typer.Option("--worker/--no-worker",
                                               help="Also run a Celery worker on the same Redis.")] = True,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info") -> None:
    """Run the API on the configured Redis: the embedded one (kept running by a supervisor) by default."""
    import uvicorn

    from scheduler import redis_server
    from scheduler.settings import Settings

    settings = Settings()
    if settings.embedded:
        # Started (and supervised) here, before any API process: they all attach to this one server.
        server = redis_server.embedded(settings.data_dir)
        redis_server.supervise(settings.data_dir)
        err.print(f"embedded Redis on {server.socket_file} (data in {settings.data_dir})")
    if worker:
        _start_worker()
    err.print(f"API on http://{host}:{port} in {workers} process(es)  (docs: /docs, readiness: /readyz)")
    if workers > 1:
        # uvicorn starts the processes (each builds its own app on the same settings) and stops them on
        # SIGTERM; then this function returns, and the atexit hooks stop the embedded Redis and the worker.
        # The processes count requests in shared files, so that /metrics reports all of them (api.metrics).
        from api.metrics import MULTIPROCESS_DIR

        if not os.environ.get(MULTIPROCESS_DIR):
            os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="cloudsched-metrics-")
            atexit.register(shutil.rmtree, os.environ[MULTIPROCESS_DIR], ignore_errors=True)
        uvicorn.run("api.app:create_app_from_environment", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level)
        return
    from api.app import create_app, settled
    from scheduler.store import open_store

    app = settled(create_app(settings, open_store(settings)))
    # uvicorn re-raises SIGTERM once it has shut down; as an exit (not the default kill) it lets
    # the atexit hooks stop the embedded Redis and the worker this process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _start_worker() -> None:
    """A Celery worker child on the same settings; it ends with this process."""
    try:
        import workers.app  # noqa: F401  (only to know it is there)
    except ImportError:
        err.print("no Celery app (workers.app): serving the API only")
        return
    child = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool=solo",
                              "--loglevel=info"])
    atexit.register(_stop, child)
    err.print(f"Celery worker pid {child.pid}")


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()

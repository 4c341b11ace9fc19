"""docker-compose.yml cannot be run here (no Docker engine): check that every command and
setting it names exists in the code."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.main import get_command

from scheduler.cli import app
from scheduler.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OURS = {name: s for name, s in COMPOSE["services"].items() if "build" in s}


def test_redis_keeps_an_append_only_file():
    command = COMPOSE["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_api_worker_and_beat_run_from_our_image():
    assert {"api", "worker", "beat"} <= set(OURS)
    assert (ROOT / "Dockerfile").exists()


def test_cloudsched_commands_and_options_exist():
    cli = get_command(app)
    for name, service in OURS.items():
        command = service["command"]
        if command[0] != "cloudsched":
            continue
        sub = cli.commands[command[1]]  # KeyError: the command does not exist
        options = {opt for p in sub.params for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        for arg in command[2:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"{name}: {command[1]} has no option {arg}"


def test_celery_commands_point_at_our_app():
    from workers.app import app as celery_app

    for name, service in OURS.items():
        command = service["command"]
        if command[0] == "celery":
            assert command[command.index("-A") + 1] == "workers.app", name
            assert command[3] in ("worker", "beat"), name
    assert celery_app.main == "cloudsched"


def test_environment_variables_are_settings():
    fields = {f"CLOUDSCHED_{name.upper()}" for name in Settings.model_fields}
    for name, service in OURS.items():
        for variable in service.get("environment", {}):
            assert variable in fields, f"{name}: {variable} is not a setting"

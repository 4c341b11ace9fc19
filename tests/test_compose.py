"""docker-compose.yml cannot be run here (no Docker engine): check what it names exists."""

from pathlib import Path

import yaml
from typer.main import get_command

from scheduler.cli import app

ROOT = Path(__file__).resolve().parent.parent


def test_compose_services_use_real_commands_and_aof_redis():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    commands = set(get_command(app).commands)
    for name, service in services.items():
        if "build" in service:
            assert service["command"][0] in commands, f"{name}: unknown cloudsched command"
    assert (ROOT / "Dockerfile").exists()

"""cloudsched's one configuration object (DESIGN §5): environment variables `CLOUDSCHED_*`.

Values that cannot work are refused when the settings are read, with the variable named,
instead of failing later inside a worker or at 01:00.
"""

from __future__ import annotations

import re
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis", "rediss", "unix")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDSCHED_", frozen=True)

    redis_url: str | None = Field(
        default=None, description="Redis to use (redis://, rediss://, unix://); unset: the embedded one"
    )
    data_dir: Path = Field(default=Path(".cloudsched"), description="where the embedded Redis keeps its data")
    plan_time_limit_s: float = Field(default=30, gt=0, le=24 * 3600, description="solver wall-clock limit")
    nightly_at: str = Field(default="01:00", description="local time (HH:MM) of the nightly plan run")
    timezone: str = Field(default="UTC", description="IANA time zone of `nightly_at`")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=1_000_000_000)
    rate_limit_per_minute: int = Field(default=600, ge=1, le=10_000_000)
    # Execution (issue 4): where approved jobs run and how launches are re-checked.
    launch_via: Literal["local", "fake", "catalog"] = Field(
        default="local", description="local: run commands on this machine; fake: the fault-injecting provider; "
                                     "catalog: each offer's own provider adapter (real money)")
    price_tolerance_pct: float = Field(default=5.0, ge=0, le=1000, description="refuse a launch above approved + this")
    recovery_tolerance_pct: float = Field(default=25.0, ge=0, le=1000,
                                          description="an automatic re-placement may cost this much over approved")
    dispatch_every_s: float = Field(default=10.0, gt=0, le=3600)
    track_every_s: float = Field(default=60.0, gt=0, le=3600)
    reconcile_every_s: float = Field(default=300.0, gt=0, le=86400)
    launch_lease_s: float = Field(default=120.0, gt=0, le=3600,
                                  description="a launch not finished in this time is sent again (a dead worker)")
    provider_calls_per_s: float = Field(default=20.0, gt=0, le=100_000,
                                        description="per adapter, all workers together")
    ui_session_secret: SecretStr | None = Field(
        default=None, min_length=32, description="signs /ui session cookies; unset: one generated in data_dir"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # CLOUDSCHED_REDIS_URL= (empty) means the embedded server
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)}, got {value!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"names no host: {value!r}")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError(f"names no socket path: {value!r}")
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: Path) -> Path:
        if not str(value).strip():
            raise ValueError("must name a directory")
        if value.exists() and not value.is_dir():
            raise ValueError(f"{str(value)!r} exists and is not a directory")
        return value

    @field_validator("nightly_at")
    @classmethod
    def _nightly_at(cls, value: str) -> str:
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if not match:
            raise ValueError(f"must be a 24-hour time HH:MM, e.g. '01:00', got {value!r}")
        return f"{int(match[1]):02d}:{match[2]}"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin')") from None
        return value

    @property
    def nightly_time(self) -> time:
        hour, minute = self.nightly_at.split(":")
        return time(int(hour), int(minute), tzinfo=self.tz)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def embedded(self) -> bool:
        return self.redis_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment (tests: `get_settings.cache_clear()`)."""
    return Settings()

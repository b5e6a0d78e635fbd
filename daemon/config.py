"""Settings: a pydantic model loaded from YAML, then PERCHD_* environment overrides; zero-config defaults run.

Precedence: defaults < YAML file (--config, PERCHD_CONFIG, /etc/perchd/config.yaml when it exists) < environment.
Besides the documented variables (PERCHD_PORT, PERCHD_MODEL_DIR, …), any key can be set as
PERCHD__SECTION__KEY=value (double underscores nest), e.g. PERCHD__DETECTION__MIN_CONFIDENCE=0.5.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = Path("/etc/perchd/config.yaml")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _default_state_dir() -> Path:
    if _is_root():
        return Path("/var/lib/perchd")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "perchd"


def _default_model_dir() -> Path:
    if _is_root():
        return Path("/var/lib/perchd/models")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "perchd" / "models"


def _default_cache_dir() -> Path:
    if _is_root():
        return Path("/var/cache/perchd")
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "perchd"


class Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class DetectionSettings(Section):
    # "auto" = the model built for the best usable accelerator (manifest `defaults.detection`).
    model: str = "auto"
    min_confidence: float = Field(0.4, ge=0.0, le=1.0)


class FaceSettings(Section):
    # CodeProject.AI's face module defaults to 0.67: below it YuNet finds too many faces in patterned backgrounds.
    min_confidence: float = Field(0.67, ge=0.0, le=1.0)


class CpuSettings(Section):
    # Worker threads (each with its own interpreter) per CPU model; None = one per core.
    workers: int | None = Field(None, ge=1, le=64)
    # Threads inside each interpreter. One per worker beats one multi-threaded interpreter for throughput.
    threads: int = Field(1, ge=1, le=64)
    # Threads of the extra interpreter that serves a detection request arriving alone (nothing queued or running
    # on its model): None = every core, 0 or 1 = no extra interpreter.
    lone_threads: int | None = Field(None, ge=0, le=64)


class QueueSettings(Section):
    max_depth: int = Field(32, ge=1, le=10_000)
    timeout_s: float = Field(10.0, gt=0, le=600)


class LimitSettings(Section):
    # Camera stills are often larger than aiohttp's 1 MiB default.
    max_upload_mb: float = Field(20.0, gt=0, le=512)
    max_pixels: int = Field(50_000_000, ge=1)


class MemorySettings(Section):
    # MiB the daemon may hold; task models are unloaded (least recently used first) to stay inside it.
    # None = 60 % of the RAM (or of the cgroup limit), at least 256 MiB (daemon/memory.py default_budget_mb).
    budget_mb: float | None = Field(None, ge=64)


class AuthSettings(Section):
    api_keys: list[str] = Field(default_factory=list)


class FetchSettings(Section):
    enabled: bool = False
    max_mb: float = Field(20.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    allow: list[str] = Field(default_factory=list)


class UpdateSettings(Section):
    # Release feed (a small JSON index, daemon/update/feed.py); None = the daemon never looks for updates online.
    feed_url: str | None = None
    check_interval_h: float = Field(24.0, gt=0, le=24 * 30)
    # Home Assistant's "Install" button installs the feed's newest release; off unless the owner turns it on.
    allow_mqtt_install: bool = False
    # Written by image-build with VERSION=<image version>; absent on a pip install.
    release_file: Path = Path("/usr/lib/perch/release")

    @field_validator("feed_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("the release feed must be an http:// or https:// URL")
        return value or None


class WebSettings(Section):
    """The dashboard at / and the live camera views it shows (daemon/web)."""

    # The dashboard page and its files; the JSON and camera routes stay on either way.
    dashboard: bool = True
    # Live MJPEG viewers per camera; one more is refused with 503 (each costs a socket and its buffers).
    max_viewers_per_camera: int = Field(4, ge=1, le=100)
    # Annotated frames per second sent to viewers (each frame is drawn and encoded once for all of them).
    stream_fps: float = Field(10.0, gt=0, le=30)
    stream_quality: int = Field(70, ge=10, le=100)
    # A viewer whose connection accepts nothing for this long is dropped (a client that stopped reading).
    viewer_stall_s: float = Field(5.0, gt=0, le=300)


class Settings(Section):
    # This box's name among several (MQTT topics, Home Assistant devices and ids); None = the host name.
    name: str | None = Field(None, min_length=1, max_length=64)
    host: str = "0.0.0.0"
    port: int = Field(32168, ge=1, le=65535)
    # DeepStack-semantics listener (real HTTP status codes); 0 disables it.
    legacy_port: int = Field(5000, ge=0, le=65535)
    accelerator: Literal["auto", "rknn", "edgetpu", "tensorrt", "hailo", "cpu"] = "auto"
    model_dir: Path = Field(default_factory=_default_model_dir)
    state_dir: Path = Field(default_factory=_default_state_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    custom_model_dir: Path | None = None
    hardware_root: Path = Path("/")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    verify_models: bool = True
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    faces: FaceSettings = Field(default_factory=FaceSettings)
    cpu: CpuSettings = Field(default_factory=CpuSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    # Camera and MQTT sections are validated by their own modules (daemon/cameras, daemon/mqtt).
    mqtt: dict[str, Any] | None = None
    cameras: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def effective_custom_model_dir(self) -> Path:
        return self.custom_model_dir or self.state_dir / "custom-models"


class ConfigError(Exception):
    """One line a person can act on: which file, which key, what is wrong."""


# Documented variables -> dotted keys.
ENV_KEYS: dict[str, str] = {
    "PERCHD_NAME": "name",
    "PERCHD_HOST": "host",
    "PERCHD_PORT": "port",
    "PERCHD_LEGACY_PORT": "legacy_port",
    "PERCHD_ACCELERATOR": "accelerator",
    "PERCHD_MODEL_DIR": "model_dir",
    "PERCHD_STATE_DIR": "state_dir",
    "PERCHD_CACHE_DIR": "cache_dir",
    "PERCHD_LOG_LEVEL": "log_level",
    "PERCHD_HARDWARE_ROOT": "hardware_root",
}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def env_overrides(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dotted in ENV_KEYS.items():
        if environ.get(name, "") != "":
            _set_dotted(out, dotted, environ[name])
    for name, value in environ.items():
        if name.startswith("PERCHD__"):
            dotted = ".".join(p.lower() for p in name[len("PERCHD__") :].split("__") if p)
            # YAML parsing gives lists, numbers and booleans from env strings ("[a, b]", "0.5", "true").
            _set_dotted(out, dotted, yaml.safe_load(value) if value else value)
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_path(cli_path: str | Path | None, environ: dict[str, str] | os._Environ[str]) -> Path | None:
    if cli_path:
        return Path(cli_path)
    if environ.get("PERCHD_CONFIG"):
        return Path(environ["PERCHD_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _describe(exc: ValidationError, source: str, prefix: str = "") -> str:
    err = exc.errors()[0]
    key = prefix + ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown setting '{key}'"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: invalid value for '{key}': {err['msg']}{more}"


def load_settings(
    cli_path: str | Path | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    path = config_path(cli_path, environ)
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a mapping of settings")
        data = loaded
    env = env_overrides(environ)
    if env:
        source = f"{source} + environment" if path else "environment"
    data = _merge(_merge(data, env), overrides or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
    # The mqtt section has its own model (daemon/mqtt/config.py); check it now so a typo stops the start-up.
    # Camera entries are checked one by one when the cameras start: a bad one must not stop the others.
    from .mqtt.config import parse_mqtt

    try:
        parse_mqtt(settings.mqtt)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, prefix="mqtt.")) from exc
    return settings

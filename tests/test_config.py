"""Settings: defaults, YAML, environment overrides, and one clear line + exit 2 for a bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perch.daemon.config import ConfigError, load_settings


def test_zero_config_defaults() -> None:
    s = load_settings(environ={})
    assert s.port == 32168 and s.legacy_port == 5000 and s.accelerator == "auto"
    assert s.host == "0.0.0.0" and s.detection.min_confidence == 0.4


def test_yaml_then_env_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 8000\naccelerator: edgetpu\ndetection: {min_confidence: 0.6}\n")
    env = {
        "PERCHD_CONFIG": str(cfg), "PERCHD_PORT": "9000", "PERCHD_LEGACY_PORT": "0",
        "PERCHD_MODEL_DIR": "/m", "PERCHD_STATE_DIR": "/s", "PERCHD_LOG_LEVEL": "DEBUG",
        "PERCHD__CPU__WORKERS": "3",
    }
    s = load_settings(environ=env)
    assert s.port == 9000 and s.legacy_port == 0 and s.accelerator == "edgetpu"
    assert s.model_dir == Path("/m") and s.state_dir == Path("/s") and s.log_level == "debug"
    assert s.detection.min_confidence == 0.6 and s.cpu.workers == 3
    assert load_settings(environ={"PERCHD_ACCELERATOR": "cpu"}).accelerator == "cpu"


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("port: seventy\n", "'port'"),
        ("detection: {min_confidence: 3}\n", "'detection.min_confidence'"),
        ("acclerator: cpu\n", "unknown setting 'acclerator'"),
        ("port: [1\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, yaml_text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert needle in str(info.value) and str(cfg) in str(info.value)


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("accelerator: quantum\n")
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "--config", str(cfg), "run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "accelerator" in lines[0], proc.stderr

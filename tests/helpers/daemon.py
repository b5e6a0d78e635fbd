"""A real `perchd run` in a subprocess for the reliability tests: its own config, state folder and loopback ports,
started and stopped (SIGTERM, SIGKILL) like systemd would, and read from outside like an operator would (/proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .rtsp_server import free_port

# Forced, so that a start never spends time measuring which model keeps up (`auto`).
MODEL = "ssd_mobilenet_v1"


class Daemon:
    def __init__(self, workdir: Path, models: Path, *, name: str | None = None, legacy_port: bool = False,
                 config: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 state_dir: Path | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.legacy_port = free_port() if legacy_port else 0
        cfg: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "legacy_port": self.legacy_port,
            "model_dir": str(models),
            "state_dir": str(state_dir or workdir / "state"),
            "cache_dir": str(workdir / "cache"),
            "detection": {"model": MODEL},
        }
        if name is not None:
            cfg["name"] = name
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.config = cfg
        self.config_file = workdir / "perchd.yaml"
        self.config_file.write_text(yaml.safe_dump(cfg))
        self.log = workdir / "perchd.log"
        # Only what the daemon needs from the test's environment: no PERCHD_* leaking in from the caller.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PERCHD", "NOTIFY_SOCKET", "WATCHDOG"))}
        self.env.update({"PERCHD_CONFIG": str(self.config_file), **(env or {})})
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life cycle -----------------------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Daemon:
        return self.launch().ready(timeout)

    def launch(self) -> Daemon:
        """Start the process without waiting (start several, then wait for each with ready())."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def ready(self, timeout: float = 60.0) -> Daemon:
        """Wait until /v1/status/ping answers (the models are loaded and the listeners bound)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"perchd exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("/v1/status/ping"), timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"perchd did not answer within {timeout:g} s: {self.log_text()[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (what systemd sends) and wait; SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- outside view ---------------------------------------------------------------------------------------------

    def url(self, path: str, legacy: bool = False) -> str:
        return f"http://127.0.0.1:{self.legacy_port if legacy else self.port}{path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def proc_status(self) -> dict[str, int]:
        """RSS (KiB), threads and open file descriptors, as /proc shows them."""
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
        return {"rss_kib": fields["VmRSS"], "threads": fields["Threads"],
                "fds": len(os.listdir(f"/proc/{self.pid}/fd"))}

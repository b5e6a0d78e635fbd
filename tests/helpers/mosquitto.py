"""Debian's mosquitto broker on a free loopback port with its own throw-away config, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .rtsp_server import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_available() -> str | None:
    return None if Path(MOSQUITTO).exists() else "Debian package mosquitto not installed"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(workdir: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 (IP SAN, so host name checks really pass)."""
    ca_key, ca, key, csr, cert = (workdir / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = workdir / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=perch-test-ca",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
        "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return TlsFiles(ca, cert, key)


class Mosquitto:
    """Start, kill and restart (same port) a broker. Without persistence a restart forgets retained messages,
    which is what the reconnect test needs: everything a subscriber sees afterwards was published again."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        persistence: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # Mosquitto 2 refuses anonymous clients once a listener is defined, unless told otherwise.
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}"]
        if persistence:
            # As Debian's packaged broker runs: retained messages and persistent sessions survive a clean restart.
            store = workdir / f"mosquitto-{self.port}-db"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/"]
        else:
            lines.append("persistence false")
        lines.append("user root")  # root: keep reading our root-owned temp files
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        if users:
            pwfile = workdir / f"passwd-{self.port}"
            pwfile.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True)
            lines.append(f"password_file {pwfile}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, graceful: bool = False) -> None:
        """Kill the broker (a crash), or with graceful=True stop it as systemd does (SIGTERM: saves its store)."""
        if self.proc is not None and self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

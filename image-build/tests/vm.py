"""One Perch image booted in qemu-system-aarch64 (virt, Cortex-A72, 2 CPUs, 2 GiB, EDK2 UEFI), seen from outside.

The REST port and SSH are forwarded to free ports on 127.0.0.1 only; the guest reaches the host's loopback as
10.0.2.2 (user-mode networking). Each start appends the serial console to console.log in the work folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

EDK2_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
EDK2_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
BOOT_OFFSET = 16 * 1024 * 1024  # PERCHBOOT starts at 16 MiB (image-build/genimage.cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(f"[boot-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Vm:
    def __init__(self, image: Path, work: Path, disk_size: str = "8G") -> None:
        self.work = work
        self.disk = work / "disk.img"
        # A copy of the card, grown like a larger SD card: the data partition fills the rest on the first boot.
        subprocess.run(["cp", "--sparse=always", str(image), str(self.disk)], check=True)
        subprocess.run(["truncate", "-s", disk_size, str(self.disk)], check=True)
        self.vars = work / "efivars.fd"
        shutil.copy(EDK2_VARS, self.vars)
        self.console_log = work / "console.log"
        self.key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boot-test", "-f", str(self.key)],
                       check=True)
        self.known_hosts = work / "known_hosts"
        self.rest_port = free_port()
        self.ssh_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()

    # --- the boot partition, while the machine is off --------------------------------------------------------
    def put_boot_file(self, name: str, text: str) -> None:
        assert self.proc is None, "mtools must not write a FAT the guest has mounted"
        src = self.work / name
        src.write_text(text)
        subprocess.run(["mcopy", "-o", "-i", f"{self.disk}@@{BOOT_OFFSET}", str(src), f"::{name}"], check=True)

    def boot_files(self, path: str = "::") -> str:
        assert self.proc is None
        return subprocess.run(["mdir", "-b", "-i", f"{self.disk}@@{BOOT_OFFSET}", path],
                              capture_output=True, text=True, check=True).stdout

    # --- power -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        assert self.proc is None
        with self.console_log.open("ab") as console:
            console.write(f"\n===== power on {time.strftime('%H:%M:%S')} =====\n".encode())
        net = (f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.rest_port}-:32168,"
               f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22")
        cmd = [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console_log}.part",
            "-drive", f"if=pflash,format=raw,readonly=on,file={EDK2_CODE}",
            "-drive", f"if=pflash,format=raw,file={self.vars}",
            "-drive", f"if=virtio,format=raw,file={self.disk}",
            # romfile=: no iPXE option ROM (not installed, and nothing boots from the network here).
            "-netdev", net, "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-device", "virtio-rng-pci",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=(self.work / "qemu.err").open("ab"))
        self.started = time.monotonic()

    def _collect_console(self) -> None:
        part = Path(f"{self.console_log}.part")
        if part.exists():
            with self.console_log.open("ab") as console:
                console.write(part.read_bytes())
            part.unlink()

    def kill(self) -> None:
        """Power cut: SIGKILL, no shutdown, nothing flushed that the guest had not written."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self._collect_console()

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.ssh("systemctl poweroff", check=False, timeout=20)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._collect_console()

    def console(self) -> str:
        text = self.console_log.read_text(errors="replace") if self.console_log.exists() else ""
        part = Path(f"{self.console_log}.part")
        return text + (part.read_text(errors="replace") if part.exists() else "")

    def console_tail(self, lines: int = 60) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    # --- outside views ---------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.rest_port}{path}"

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/v1/status/ping"), timeout=5) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 900) -> float:
        """Seconds since power-on until the REST port answers; fails with the console's end when it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                errors = (self.work / "qemu.err").read_text(errors="replace")[-2000:]
                raise AssertionError(f"qemu exited ({self.proc.returncode}): {errors}\n{self.console_tail()}")
            if self.ping():
                return time.monotonic() - self.started
            time.sleep(2)
        raise AssertionError(f"REST port not ready after {timeout:.0f} s:\n{self.console_tail()}")

    def wait_down(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.ping():
            if time.monotonic() > deadline:
                raise AssertionError("the guest did not go down")
            time.sleep(1)

    def reboot(self, timeout: float = 900) -> float:
        """`systemctl reboot` inside; seconds from the command until the REST port answers again."""
        self.ssh("systemctl reboot", check=False, timeout=30)
        self.wait_down()
        self.started = time.monotonic()
        return self.wait_ready(timeout)

    def ssh_args(self, strict: bool = True) -> list[str]:
        return [
            "-i", str(self.key), "-p", str(self.ssh_port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "HostKeyAlias=perch-boot-test",
            # The first connection learns the host key; every later one insists on it (an update keeps it).
            "-o", f"StrictHostKeyChecking={'yes' if strict and self.known_hosts.exists() else 'accept-new'}",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
        ]

    def ssh(self, command: str, check: bool = True, timeout: float = 300,
            user: str = "root") -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ssh", *self.ssh_args(), f"{user}@127.0.0.1", command],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {command!r} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def wait_ssh(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.ssh("true", check=False, timeout=60).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"no SSH login within {timeout:.0f} s:\n{self.console_tail()}")
            time.sleep(3)

    def wait_boot_finished(self, timeout: float = 600) -> str:
        """Until systemd's boot transaction is over (slot check included); returns is-system-running's answer."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.ssh("systemctl is-system-running", check=False).stdout.strip()
            if state not in ("initializing", "starting", ""):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"boot not finished after {timeout:.0f} s (state {state})")
            time.sleep(3)

    def rauc_status(self) -> dict:
        return json.loads(self.ssh("rauc status --output-format=json").stdout)

    def grubenv(self) -> dict[str, str]:
        out = self.ssh("grub-editenv /boot/firmware/EFI/perch/grubenv list").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def post(self, path: str, fields: dict[str, str], files: dict[str, Path], timeout: float = 300) -> dict:
        """multipart/form-data POST, as the CodeProject.AI clients send it."""
        boundary = f"perch{os.getpid()}{time.monotonic_ns()}"
        body = b""
        for name, value in fields.items():
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
        for name, file in files.items():
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file.name}\""
                     "\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + file.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(self.url(path), data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())

    def get(self, path: str, timeout: float = 60) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as reply:
            return json.loads(reply.read())

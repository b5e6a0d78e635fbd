"""Boot test of the built image (run by .ci/image.sh, never by the main pytest run, whose testpaths is tests/).

    .venv/bin/python -m pytest image-build/tests --image-dir OUT [--shared ../shared] -p no:cacheprovider -v -s

OUT is build.sh's --out folder. One virtual card goes through the whole story in file order: first boot,
reboot, power cut, refused settings (test_boot.py), then the updates (test_update.py); a later test builds on the
state an earlier one left.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from vm import Vm, free_port, log

REPO = Path(__file__).resolve().parents[2]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image-dir", type=Path, required=True, help="build.sh's --out folder")
    parser.addoption("--shared", type=Path, default=REPO.parent / "shared", help="shared models and photos")
    parser.addoption("--keep-vm", action="store_true", help="keep the work folder (disk, console log)")


@pytest.fixture(scope="session")
def image_dir(request: pytest.FixtureRequest) -> Path:
    out: Path = request.config.getoption("--image-dir").resolve()
    assert (out / "perch-arm64.img").is_file(), f"no perch-arm64.img in {out}"
    return out


@pytest.fixture(scope="session")
def shared(request: pytest.FixtureRequest) -> Path:
    path: Path = request.config.getoption("--shared").resolve()
    assert (path / "models").is_dir() and (path / "images").is_dir(), f"no models/images in {path}"
    return path


@pytest.fixture(scope="session")
def work(request: pytest.FixtureRequest) -> Iterator[Path]:
    # Not pytest's tmp_path: it keeps only the last few runs, and other test runs on the machine rotate it away.
    path = Path(tempfile.mkdtemp(prefix="perch-boot-"))
    yield path
    if request.config.getoption("--keep-vm"):
        log(f"work folder kept: {path}")
    else:
        # The console log is the one thing worth keeping after a failure: it goes next to the image.
        if (path / "console.log").exists():
            shutil.copy(path / "console.log", request.config.getoption("--image-dir") / "boot-test-console.log")
        shutil.rmtree(path, ignore_errors=True)


class Broker:
    """A real Mosquitto on the host's loopback (the guest's 10.0.2.2) and a client recording what arrives."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="perch-boot-test")
        self.client.on_message = lambda _c, _u, msg: self.messages.append((msg.topic, msg.payload, msg.retain))
        for _ in range(50):
            try:
                self.client.connect("127.0.0.1", self.port)
                break
            except OSError:
                time.sleep(0.1)
        self.client.subscribe([("perch/#", 0), ("homeassistant/#", 0)])
        self.client.loop_start()

    def topics(self, prefix: str) -> dict[str, bytes]:
        return {topic: payload for topic, payload, _ in list(self.messages) if topic.startswith(prefix)}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture(scope="session")
def broker(work: Path) -> Iterator[Broker]:
    b = Broker(work)
    yield b
    b.close()


class Files:
    """Plain HTTP on the host's loopback: a model mirror for `perchd models pull` and the update bundles."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        """As the guest sees it."""
        return f"http://10.0.2.2:{self.port}/{path}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def files(work: Path, shared: Path) -> Iterator[Files]:
    root = work / "www"
    root.mkdir()
    (root / "models").symlink_to(shared / "models")
    f = Files(root)
    yield f
    f.server.shutdown()


@pytest.fixture(scope="session")
def vm(image_dir: Path, work: Path) -> Iterator[Vm]:
    machine = Vm(image_dir / "perch-arm64.img", work)
    yield machine
    if machine.proc is not None:
        machine.stop()


@pytest.fixture(scope="session", autouse=True)
def timings() -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    for name, seconds in found.items():
        log(f"timing: {name}: {seconds:.0f} s")


ORDER = ["test_raspi.py", "test_boot.py", "test_update.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The story's order: the Pi checks use a fresh copy of the image; the virt card goes boot, then update."""
    items.sort(key=lambda item: ORDER.index(item.path.name) if item.path.name in ORDER else len(ORDER))

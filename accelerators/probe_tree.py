"""What the hardware probe works with: the probed tree (a root path, read without opening device nodes), the
sysfs/library/Python lookups every accelerator probe shares, and the report it produces (accelerators/probe.py)."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_TEGRA: dict[str, str] = {"tegra234": "Orin", "tegra194": "Xavier", "tegra210": "Nano / TX1", "tegra186": "TX2"}

# Library search path of Debian-style systems (Raspberry Pi OS, Armbian, JetPack, Ubuntu).
_LIB_DIRS = (
    "usr/lib",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/arm-linux-gnueabihf",
    "usr/local/lib",
    "lib",
    "lib/aarch64-linux-gnu",
)


@dataclass
class AcceleratorReport:
    kind: str
    present: bool
    usable: bool
    reason: str
    devices: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class BoardReport:
    model: str | None
    soc: str | None
    cpu_model: str | None
    cores: int
    arch: str | None = None
    family: str | None = None  # "rockchip" | "raspberrypi" | "jetson" | None
    kernel: str | None = None
    compatible: list[str] = field(default_factory=list)


@dataclass
class HardwareReport:
    board: BoardReport
    accelerators: list[AcceleratorReport]

    def get(self, kind: str) -> AcceleratorReport | None:
        return next((a for a in self.accelerators if a.kind == kind), None)

    def usable_kinds(self) -> list[str]:
        return [a.kind for a in self.accelerators if a.usable]

    def to_dict(self) -> dict[str, Any]:
        return {"board": asdict(self.board), "accelerators": [asdict(a) for a in self.accelerators]}


class _Tree:
    """File access relative to the probed root; every path argument is written as an absolute path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        try:
            return self.path(rel).read_text(errors="replace")
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        # lexists: a dangling symlink (driver link into a tree we did not copy) still counts as present.
        return os.path.lexists(self.path(rel))

    def glob(self, pattern: str) -> list[Path]:
        return sorted(self.root.glob(pattern.lstrip("/")))

    def link_name(self, rel: str | Path) -> str | None:
        """Basename of a sysfs symlink target (…/driver -> ../../bus/pci/drivers/apex gives "apex")."""
        p = rel if isinstance(rel, Path) else self.path(rel)
        try:
            return os.path.basename(os.readlink(p).rstrip("/"))
        except OSError:
            return None

    def find_lib(self, *names: str) -> str | None:
        """First library matching one of `names` (glob patterns allowed), as an absolute path on the target."""
        for d in _LIB_DIRS:
            for name in names:
                hits = self.glob(f"{d}/{name}")
                if hits:
                    return "/" + str(hits[0].relative_to(self.root))
        return None

    def dev_access(self, rel: str) -> bool:
        # os.access is a permission check (stat + credentials), not an open: safe on live device nodes.
        return os.access(self.path(rel), os.R_OK | os.W_OK)


def _python_has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _ort_has_provider_lib(provider_lib: str) -> bool:
    """onnxruntime-gpu ships one shared library per execution provider; look for it without importing ORT."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(loc) / "capi" / provider_lib).exists() for loc in spec.submodule_search_locations)


def _wheel_nvinfer() -> str | None:
    """libnvinfer from PyPI's TensorRT wheels (tensorrt-cu12-libs installs the package `tensorrt_libs`)."""
    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        hits = sorted(Path(loc).glob("libnvinfer.so.*"))
        if hits:
            return str(hits[0])
    return None


def _read_value(tree: _Tree, path: Path) -> str:
    """A one-line sysfs attribute, lower-case, without a 0x prefix ("0x1ac1" -> "1ac1", "5000" -> "5000")."""
    try:
        return path.read_text().strip().lower().removeprefix("0x")
    except OSError:
        return ""


def _usb_devices(tree: _Tree) -> list[tuple[str, str, str, Path]]:
    """(vendor, product, sysfs name, sysfs dir) of every USB device; interfaces ("1-1:1.0") have no idVendor."""
    out = []
    for d in tree.glob("sys/bus/usb/devices/*"):
        vendor = _read_value(tree, d / "idVendor")
        product = _read_value(tree, d / "idProduct")
        if vendor and product:
            out.append((vendor, product, d.name, d))
    return out


def _pci_devices(tree: _Tree) -> list[tuple[str, str, str, Path]]:
    out = []
    for d in tree.glob("sys/bus/pci/devices/*"):
        vendor = _read_value(tree, d / "vendor")
        device = _read_value(tree, d / "device")
        if vendor and device:
            out.append((vendor, device, d.name, d))
    return out


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _dev_index(p: Path, prefix: str) -> int:
    m = re.fullmatch(re.escape(prefix) + r"(\d+)", p.name)
    return int(m.group(1)) if m else -1

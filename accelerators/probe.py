"""Read-only hardware probe under a root path ("/" in production, a fake /proc + /sys + /dev tree in tests).

It reads files, symlinks and directory listings only and never opens device nodes: opening /dev/apex_0 or an NPU
node can grab the device from a running daemon, and a stat is all the probe needs. Each accelerator reports
`present` (the hardware is there) and `usable` (driver, runtime library and Python binding are there too)
separately, with a reason a person can act on. All five kinds are always reported, CPU last.

Python bindings (rknnlite, ai_edge_litert, onnxruntime's TensorRT provider, hailo_platform) belong to this
interpreter, not to the probed tree, so they are checked only when probing "/" (or when asked to explicitly).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .base import KINDS

# Rockchip SoC in "rockchip,<soc>" -> (NPU cores, rknn-toolkit2 target_platform).
_ROCKCHIP_NPU: dict[str, tuple[int, str]] = {
    "rk3588": (3, "rk3588"),
    "rk3588s": (3, "rk3588"),  # same die, fewer pins: same NPU and the same .rknn files
    "rk3576": (2, "rk3576"),
    "rk3568": (1, "rk3568"),
    "rk3566": (1, "rk3566"),
    "rk3562": (1, "rk3562"),
}
_TEGRA: dict[str, str] = {"tegra234": "Orin", "tegra194": "Xavier", "tegra210": "Nano / TX1", "tegra186": "TX2"}

# USB and PCI ids (lower-case hex, no 0x).
CORAL_USB_BOOTLOADER = ("1a6e", "089a")  # Global Unichip, before libedgetpu uploads the firmware
CORAL_USB_RUNTIME = ("18d1", "9302")  # Google, after the firmware is loaded
CORAL_PCI = ("1ac1", "089a")
HAILO_PCI: dict[tuple[str, str], str] = {("1e60", "2864"): "Hailo-8/8L", ("1e60", "45c4"): "Hailo-10H/15"}

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

# ARM "CPU part" -> core name, for boards whose /proc/cpuinfo has no "model name".
_ARM_PARTS: dict[str, str] = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd4d": "Cortex-A715",
    "0xd80": "Cortex-A520",
    "0xd81": "Cortex-A720",
}


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


# --------------------------------------------------------------------------------------------------------------
# Board


def _compatible(tree: _Tree) -> list[str]:
    raw = tree.read("proc/device-tree/compatible") or tree.read("sys/firmware/devicetree/base/compatible") or ""
    return [c for c in raw.split("\x00") if c.strip()]


def _cpu_model(cpuinfo: str) -> str | None:
    parts: dict[str, int] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and value:
            return value
        if key == "cpu part":
            name = _ARM_PARTS.get(value.lower(), f"ARM part {value}")
            parts[name] = parts.get(name, 0) + 1
    if parts:
        return " + ".join(f"{n}x {name}" for name, n in parts.items())
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "hardware" and value.strip():
            return value.strip()
    return None


def _arch(tree: _Tree, cpuinfo: str, live: bool) -> str | None:
    arch = (tree.read("proc/sys/kernel/arch") or "").strip()
    if arch:
        return arch
    if live:
        return platform.machine() or None
    if re.search(r"^CPU architecture\s*:\s*8", cpuinfo, re.M):
        return "aarch64"
    if re.search(r"^CPU architecture\s*:\s*7", cpuinfo, re.M):
        return "armv7l"
    if re.search(r"^flags\s*:.*\blm\b", cpuinfo, re.M):
        return "x86_64"
    return None


def _board(tree: _Tree, live: bool) -> BoardReport:
    cpuinfo = tree.read("proc/cpuinfo") or ""
    cores = sum(1 for line in cpuinfo.splitlines() if line.split(":")[0].strip().lower() == "processor")
    compatible = _compatible(tree)
    model = tree.read("proc/device-tree/model") or tree.read("sys/firmware/devicetree/base/model")
    model = model.rstrip("\x00\n").strip() if model else None
    if not model:
        # x86 and other ACPI machines: DMI names the board.
        vendor = (tree.read("sys/class/dmi/id/sys_vendor") or "").strip()
        product = (tree.read("sys/class/dmi/id/product_name") or "").strip()
        model = " ".join(x for x in (vendor, product) if x) or None
    soc: str | None = None
    family: str | None = None
    for comp in compatible:
        vendor, _, chip = comp.partition(",")
        if vendor == "rockchip" and chip in _ROCKCHIP_NPU:
            soc, family = chip, "rockchip"
            break
        if vendor == "nvidia" and chip in _TEGRA:
            soc, family = chip, "jetson"
            break
        if vendor == "brcm" and re.fullmatch(r"bcm2\d{3}", chip):
            soc, family = chip, "raspberrypi"
            break
    if family is None and any(c.startswith("raspberrypi,") for c in compatible):
        family = "raspberrypi"
    if family is None and tree.exists("etc/nv_tegra_release"):
        family = "jetson"
    return BoardReport(
        model=model,
        soc=soc,
        cpu_model=_cpu_model(cpuinfo),
        cores=cores or ((os.cpu_count() or 1) if live else 1),
        arch=_arch(tree, cpuinfo, live),
        family=family,
        kernel=(tree.read("proc/sys/kernel/osrelease") or "").strip() or None,
        compatible=compatible,
    )


# --------------------------------------------------------------------------------------------------------------
# Rockchip NPU


def _rknn_driver(tree: _Tree) -> tuple[str | None, str | None]:
    """(driver name, device node) of the NPU: rknpu behind a DRM render node, or rocket behind /dev/accel."""
    for card in tree.glob("sys/class/drm/renderD*"):
        if tree.link_name(card / "device" / "driver") == "rknpu":
            return "rknpu", f"/dev/dri/{card.name}"
    # Older vendor kernels (4.19, RK356x) expose a misc device instead of a DRM node.
    if tree.exists("dev/rknpu"):
        return "rknpu", "/dev/rknpu"
    for acc in tree.glob("sys/class/accel/accel*"):
        name = tree.link_name(acc / "device" / "driver")
        if name:
            return name, f"/dev/accel/{acc.name}"
    if tree.exists("dev/accel/accel0"):
        return "rocket" if tree.exists("sys/module/rocket") else "accel", "/dev/accel/accel0"
    if tree.exists("sys/module/rknpu"):
        return "rknpu", None
    return None, None


def _probe_rknn(tree: _Tree, board: BoardReport, check_python: bool) -> AcceleratorReport:
    soc = board.soc if board.family == "rockchip" else None
    if soc is None:
        return AcceleratorReport("rknn", False, False, "no Rockchip NPU SoC (rk3588/3576/3568/3566/3562) found")
    cores, target = _ROCKCHIP_NPU[soc]
    label = soc.upper()
    details = {"soc": soc, "target": target, "npu_cores": str(cores)}
    devices = [f"npu-core:{i}" for i in range(cores)]
    driver, node = _rknn_driver(tree)
    if node:
        details["node"] = node
    if driver:
        details["driver"] = driver
    if driver is None:
        return AcceleratorReport(
            "rknn", True, False,
            f"{label} has an NPU but no NPU driver is loaded: use a Rockchip vendor kernel with the rknpu driver "
            "(the board vendor's 5.10/6.1 image)", devices, details)
    if driver != "rknpu":
        return AcceleratorReport(
            "rknn", True, False,
            f"{label} NPU is driven by the mainline '{driver}' driver ({node}), which librknnrt cannot use: "
            "boot a Rockchip vendor kernel with the rknpu driver to use the NPU", devices, details)
    lib = tree.find_lib("librknnrt.so")
    if lib is None:
        return AcceleratorReport(
            "rknn", True, False,
            f"{label} NPU driver rknpu is loaded but /usr/lib/librknnrt.so is missing: install the RKNN runtime "
            "(librknnrt.so from Rockchip's rknn-toolkit2 rknpu2 runtime, same version as rknn-toolkit-lite2)",
            devices, details)
    details["library"] = lib
    if node and node.startswith("/dev/") and tree.exists(node) and not tree.dev_access(node):
        return AcceleratorReport(
            "rknn", True, False,
            f"no read/write permission on {node}: add the service user to group 'render'", devices, details)
    if check_python and not _python_has("rknnlite"):
        return AcceleratorReport(
            "rknn", True, False,
            f"{label} NPU runtime found but the Python module rknnlite is missing: "
            "pip install 'perchd[rknn]' (rknn-toolkit-lite2; no wheel for Python 3.13)", devices, details)
    return AcceleratorReport(
        "rknn", True, True, f"{label} NPU, {cores} core{'s' if cores > 1 else ''}, rknpu driver, {lib}",
        devices, details)


# --------------------------------------------------------------------------------------------------------------
# Coral Edge TPU


def _probe_edgetpu(tree: _Tree, check_python: bool) -> AcceleratorReport:
    details: dict[str, str] = {}
    devices: list[str] = []
    notes: list[str] = []
    problems: list[str] = []

    usb = sorted(
        ((name, d, (v, p)) for v, p, name, d in _usb_devices(tree) if (v, p) in (CORAL_USB_BOOTLOADER,
                                                                                 CORAL_USB_RUNTIME)),
        key=lambda x: _natural(x[0]),  # "2-1" before "10-1", like the kernel's bus numbering
    )
    for i, (name, d, ids) in enumerate(usb):
        devices.append(f"usb:{i}")
        state = "waiting for firmware" if ids == CORAL_USB_BOOTLOADER else "firmware loaded"
        details[f"usb:{i}"] = f"{':'.join(ids)} at {name} ({state})"
        speed = _read_value(tree, d / "speed")  # plain decimal Mbit/s: "480", "5000"
        if ids == CORAL_USB_RUNTIME and speed.isdigit() and int(speed) < 5000:
            notes.append(f"usb:{i} runs at {speed} Mbit/s: plug it into a USB 3 (blue) port for full speed")

    apex_nodes = sorted(tree.glob("dev/apex_*"), key=lambda p: _dev_index(p, "apex_"))
    for p in apex_nodes:
        idx = _dev_index(p, "apex_")
        if idx < 0:
            continue
        devices.append(f"pci:{idx}")
        details[f"pci:{idx}"] = f"/dev/{p.name}"
        if not tree.dev_access(f"dev/{p.name}"):
            problems.append(f"no read/write permission on /dev/{p.name}: add the service user to group 'apex'")
    pci = [(name, d) for v, dev, name, d in _pci_devices(tree) if (v, dev) == CORAL_PCI]
    missing_driver = []
    for name, d in pci:
        drv = tree.link_name(d / "driver")
        details[f"pci {name}"] = f"1ac1:089a driver={drv or 'none'}"
        if not apex_nodes:
            missing_driver.append(name)

    present = bool(usb or apex_nodes or pci)
    if not present:
        return AcceleratorReport("edgetpu", False, False, "no Coral Edge TPU found (USB 1a6e:089a / 18d1:9302, "
                                 "PCIe 1ac1:089a)", [], details)
    if missing_driver and not devices:
        return AcceleratorReport(
            "edgetpu", True, False,
            f"PCIe Coral found ({', '.join(missing_driver)}) but /dev/apex_0 is missing: install the gasket/apex "
            "driver (gasket-dkms from Coral's apt repository) and reboot; on a Raspberry Pi 5 also set "
            "dtparam=pciex1 and kernel=kernel8.img in config.txt", devices, details)
    if missing_driver:
        notes.append(f"PCIe Coral {', '.join(missing_driver)} has no /dev/apex node: install the gasket/apex driver")
    lib = tree.find_lib("libedgetpu.so.1", "libedgetpu.so.1.*")
    if lib is None:
        problems.insert(0, "Coral found but libedgetpu.so.1 is missing: install libedgetpu1-std from Coral's apt "
                        "repository")
    else:
        details["library"] = lib
    if usb and not _has_udev_rule(tree):
        notes.append("no udev rule grants access to the USB Coral (1a6e:089a and 18d1:9302): install perchd's "
                     "udev rules and add the service user to group 'plugdev'")
    if check_python and not (_python_has("ai_edge_litert") or _python_has("tflite_runtime")):
        problems.append("the Python module ai_edge_litert (or tflite_runtime) is missing: pip install ai-edge-litert")
    if problems:
        return AcceleratorReport("edgetpu", True, False, "; ".join(problems + notes), devices, details)
    names = ", ".join(devices)
    reason = f"Coral Edge TPU x{len(devices)} ({names}), {lib}"
    if notes:
        reason += "; " + "; ".join(notes)
    return AcceleratorReport("edgetpu", True, True, reason, devices, details)


def _has_udev_rule(tree: _Tree) -> bool:
    for d in ("etc/udev/rules.d", "lib/udev/rules.d", "usr/lib/udev/rules.d"):
        for rule in tree.glob(f"{d}/*.rules"):
            text = (rule.read_text(errors="replace") if rule.is_file() else "").lower()
            if "18d1" in text and "9302" in text:
                return True
    return False


# --------------------------------------------------------------------------------------------------------------
# NVIDIA (Jetson or a discrete GPU) through onnxruntime's TensorRT / CUDA providers


def _probe_tensorrt(tree: _Tree, board: BoardReport, check_python: bool) -> AcceleratorReport:
    details: dict[str, str] = {}
    jetson_release = tree.read("etc/nv_tegra_release")
    dgpu = tree.exists("dev/nvidia0") or tree.exists("proc/driver/nvidia/version")
    if board.family != "jetson" and jetson_release is None and not dgpu:
        return AcceleratorReport("tensorrt", False, False, "no NVIDIA Jetson or GPU found")
    if jetson_release is not None:
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", jetson_release)
        if m:
            details["l4t"] = f"R{m.group(1)}.{m.group(2)}"
    what = f"Jetson {_TEGRA.get(board.soc or '', '')}".strip() if board.family == "jetson" else "NVIDIA GPU"
    if board.family == "jetson" and jetson_release is None:
        return AcceleratorReport(
            "tensorrt", True, False,
            f"{what} found but /etc/nv_tegra_release is missing: flash or install JetPack (L4T) to get CUDA and "
            "TensorRT", ["cuda:0"], details)
    lib = tree.find_lib("libnvinfer.so.*", "libnvinfer.so") or (_wheel_nvinfer() if check_python else None)
    if lib is None:
        if check_python and board.family != "jetson" and _ort_has_provider_lib("libonnxruntime_providers_cuda.so"):
            # A discrete GPU with onnxruntime-gpu but no TensorRT: CUDA still runs the model.
            return AcceleratorReport("tensorrt", True, True, f"{what} through onnxruntime's CUDA provider (no "
                                     "TensorRT: pip install tensorrt-cu12 for FP16 engines)", ["cuda:0"], details)
        return AcceleratorReport(
            "tensorrt", True, False,
            f"{what} found but TensorRT (libnvinfer) is missing: install it (JetPack: apt install nvidia-tensorrt)",
            ["cuda:0"], details)
    details["library"] = lib
    m = re.search(r"libnvinfer\.so\.([\d.]+)", lib)
    if m:
        details["tensorrt"] = m.group(1)
    if check_python and not (_ort_has_provider_lib("libonnxruntime_providers_tensorrt.so")
                             or _ort_has_provider_lib("libonnxruntime_providers_cuda.so")):
        return AcceleratorReport(
            "tensorrt", True, False,
            f"{what} and TensorRT found but this onnxruntime has no TensorRT/CUDA provider: install NVIDIA's "
            "onnxruntime-gpu wheel for your JetPack release (pip install 'perchd[jetson]' on x86)",
            ["cuda:0"], details)
    return AcceleratorReport("tensorrt", True, True, f"{what}, TensorRT {details.get('tensorrt', '?')}",
                             ["cuda:0"], details)


# --------------------------------------------------------------------------------------------------------------
# Hailo


def _probe_hailo(tree: _Tree, check_python: bool) -> AcceleratorReport:
    details: dict[str, str] = {}
    nodes = sorted(
        (p for p in tree.glob("dev/hailo*") if _dev_index(p, "hailo") >= 0), key=lambda p: _dev_index(p, "hailo")
    )
    devices = [p.name for p in nodes]
    pci = [(name, HAILO_PCI[(v, d)]) for v, d, name, _ in _pci_devices(tree) if (v, d) in HAILO_PCI]
    for name, chip in pci:
        details[f"pci {name}"] = chip
    if not nodes and not pci:
        return AcceleratorReport("hailo", False, False, "no Hailo accelerator found (/dev/hailo0, PCI 1e60:2864)")
    chip = pci[0][1] if pci else "Hailo"
    if not nodes:
        return AcceleratorReport(
            "hailo", True, False,
            f"{chip} found on PCIe but /dev/hailo0 is missing: install the HailoRT PCIe driver "
            "(Raspberry Pi OS: apt install hailo-all) and reboot", devices, details)
    problems = []
    lib = tree.find_lib("libhailort.so*")
    if lib is None:
        problems.append(f"{chip} found but libhailort is missing: install HailoRT (apt install hailo-all)")
    else:
        details["library"] = lib
    for p in nodes:
        if not tree.dev_access(f"dev/{p.name}"):
            problems.append(f"no read/write permission on /dev/{p.name}: install HailoRT's udev rule")
    if check_python and not _python_has("hailo_platform"):
        problems.append("the Python module hailo_platform is missing: install HailoRT's Python wheel "
                        "(apt install python3-hailort; use a venv with --system-site-packages)")
    if problems:
        return AcceleratorReport("hailo", True, False, "; ".join(problems), devices, details)
    return AcceleratorReport("hailo", True, True, f"{chip} ({', '.join(devices)}), {lib}", devices, details)


def _probe_cpu(board: BoardReport) -> AcceleratorReport:
    what = board.cpu_model or "CPU"
    return AcceleratorReport(
        "cpu", True, True, f"{board.cores} cores ({what}): ai-edge-litert for .tflite, onnxruntime for .onnx",
        ["cpu"], {"cores": str(board.cores)})


def probe(root: Path | str = "/", *, check_python: bool | None = None) -> HardwareReport:
    """Probe the machine under `root`. `check_python` defaults to True only for the live system ("/")."""
    root = Path(root)
    live = root.resolve() == Path("/")
    if check_python is None:
        check_python = live
    tree = _Tree(root)
    board = _board(tree, live)
    reports = {
        "rknn": _probe_rknn(tree, board, check_python),
        "edgetpu": _probe_edgetpu(tree, check_python),
        "tensorrt": _probe_tensorrt(tree, board, check_python),
        "hailo": _probe_hailo(tree, check_python),
        "cpu": _probe_cpu(board),
    }
    return HardwareReport(board=board, accelerators=[reports[k] for k in KINDS])

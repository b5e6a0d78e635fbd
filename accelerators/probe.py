"""Read-only hardware probe under a root path ("/" in production, a fake /proc + /sys + /dev tree in tests).

It reads files, symlinks and directory listings only and never opens device nodes: opening /dev/apex_0 or an NPU
node can grab the device from a running daemon, and a stat is all the probe needs. Each accelerator reports
`present` (the hardware is there) and `usable` (driver, runtime library and Python binding are there too)
separately, with a reason a person can act on. All five kinds are always reported, CPU last.

Python bindings (rknnlite, ai_edge_litert, onnxruntime's TensorRT provider, hailo_platform) belong to this
interpreter, not to the probed tree, so they are checked only when probing "/" (or when asked to explicitly).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from .base import KINDS
from .probe_devices import _probe_edgetpu, _probe_hailo, _probe_tensorrt
from .probe_tree import _TEGRA, AcceleratorReport, BoardReport, HardwareReport, _python_has, _Tree

__all__ = ["AcceleratorReport", "BoardReport", "HardwareReport", "probe"]

# Rockchip SoC in "rockchip,<soc>" -> (NPU cores, rknn-toolkit2 target_platform).
_ROCKCHIP_NPU: dict[str, tuple[int, str]] = {
    "rk3588": (3, "rk3588"),
    "rk3588s": (3, "rk3588"),  # same die, fewer pins: same NPU and the same .rknn files
    "rk3576": (2, "rk3576"),
    "rk3568": (1, "rk3568"),
    "rk3566": (1, "rk3566"),
    "rk3562": (1, "rk3562"),
}

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

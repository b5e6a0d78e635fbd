"""Probes for the add-on accelerators: Coral Edge TPU (USB and PCIe), NVIDIA (Jetson or a discrete GPU through
onnxruntime's TensorRT/CUDA providers) and Hailo. Same rules as accelerators/probe.py: files only, never a device
node opened, `present` and `usable` reported apart with a reason a person can act on."""

from __future__ import annotations

import re

from .probe_tree import (
    _TEGRA,
    AcceleratorReport,
    BoardReport,
    _dev_index,
    _natural,
    _ort_has_provider_lib,
    _pci_devices,
    _python_has,
    _read_value,
    _Tree,
    _usb_devices,
    _wheel_nvinfer,
)

# USB and PCI ids (lower-case hex, no 0x).
CORAL_USB_BOOTLOADER = ("1a6e", "089a")  # Global Unichip, before libedgetpu uploads the firmware
CORAL_USB_RUNTIME = ("18d1", "9302")  # Google, after the firmware is loaded
CORAL_PCI = ("1ac1", "089a")
HAILO_PCI: dict[tuple[str, str], str] = {("1e60", "2864"): "Hailo-8/8L", ("1e60", "45c4"): "Hailo-10H/15"}


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

"""ONNX -> .rknn for one Rockchip NPU with rknn-toolkit2 (x86-64 host, the toolkit's own venv).

    python models/rknn/convert.py --onnx detection/yolox_nano.onnx --target rk3576 \
        --out rknn/yolox_nano_rk3576_fp16.rknn

`perchd models convert MODEL --target SOC` runs this script with the toolkit venv's Python and fills in the paths
from the manifest. The .rknn takes exactly what the ONNX takes (mean 0, std 1: perchd's pre-processing feeds the
NCHW float tensor), so one decoder serves the CPU, TensorRT and RKNN variants. fp16 is the default: an int8 build of
YOLOX loses detections (models/rknn/README.md); `--dtype i8 --dataset FILE` makes one anyway, for measuring.

Importable too: tests/rknn_sim converts in-process, because the toolkit's simulator only runs a model converted in
the same process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Targets rknn-toolkit2 2.5.0 builds for, by the SoC names the probe reports (RK3588S shares RK3588's NPU).
TARGETS: dict[str, str] = {
    "rk3588": "rk3588",
    "rk3588s": "rk3588",
    "rk3576": "rk3576",
    "rk3568": "rk3568",
    "rk3566": "rk3566",
    "rk3562": "rk3562",
}


def convert(onnx: Path, out: Path | None, target: str, dtype: str = "fp16", dataset: Path | None = None,
            verbose: bool = False) -> Any:
    """Build the model for `target`, export it to `out` (when given) and return the toolkit object, whose
    `init_runtime()` (no target) then runs it on the simulator."""
    from rknn.api import RKNN

    platform = TARGETS.get(target.lower())
    if platform is None:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if dtype == "i8" and dataset is None:
        raise ValueError("an int8 build needs --dataset (a text file listing calibration images)")
    rknn = RKNN(verbose=verbose)
    steps: list[tuple[str, Any]] = [
        ("config", lambda: rknn.config(mean_values=[[0, 0, 0]], std_values=[[1, 1, 1]], target_platform=platform)),
        ("load_onnx", lambda: rknn.load_onnx(model=str(onnx))),
        ("build", lambda: rknn.build(do_quantization=dtype == "i8", dataset=str(dataset) if dataset else None)),
    ]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        steps.append(("export_rknn", lambda: rknn.export_rknn(str(out))))
    for name, step in steps:
        ret = step()
        if ret != 0:
            rknn.release()
            raise RuntimeError(f"rknn.{name} returned {ret} for {onnx.name} -> {platform}")
    return rknn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--target", required=True, choices=sorted(TARGETS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", choices=["fp16", "i8"], default="fp16")
    parser.add_argument("--dataset", type=Path, help="int8 only: file listing calibration images, one per line")
    args = parser.parse_args(argv)
    try:
        import rknn.api  # noqa: F401
    except ImportError as exc:
        print(f"convert.py: rknn-toolkit2 is not importable here ({exc}); run it with the toolkit venv's Python "
              "(models/rknn/README.md, or `bash .ci/rknn.sh` once)", file=sys.stderr)
        return 3
    try:
        convert(args.onnx, args.out, args.target, args.dtype, args.dataset).release()
    except (RuntimeError, ValueError) as exc:
        print(f"convert.py: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) for {TARGETS[args.target]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

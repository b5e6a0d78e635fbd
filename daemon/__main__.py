"""`perchd` command line: run | hardware | models (list/verify/pull) | detect FILE | bench | users | update."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..accelerators.probe import probe
from .config import ConfigError, Settings, load_settings
from .logs import setup_logging
from .manifest import ModelFileError, load_manifest, resolve
from .pull import pull, wanted_files

EXIT_CONFIG = 2

log = logging.getLogger("perch")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    extra = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(getattr(args, "config", None), overrides=extra)


def _usable_kinds(settings: Settings) -> list[str]:
    report = probe(settings.hardware_root)
    if settings.accelerator not in ("auto", "cpu"):
        return [settings.accelerator, "cpu"]
    return [k for k in report.usable_kinds() if settings.accelerator == "auto" or k == "cpu"]


def _default_models(settings: Settings) -> list[str]:
    manifest = load_manifest()
    if settings.detection.model != "auto":
        return [settings.detection.model]
    defaults = manifest.defaults.get("detection", {})
    return list(dict.fromkeys(defaults[k] for k in _usable_kinds(settings) if k in defaults))


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args, port=args.port)
    setup_logging(settings.log_level)
    if args.pull:
        _pull(settings, _default_models(settings), None)
    missing = _missing_default_files(settings)
    if missing:
        log.warning("default model files missing in %s: %s — fetch them with `perchd models pull`"
                    " (or set PERCHD_MODEL_DIR to a folder that has them)", settings.model_dir, ", ".join(missing))
    from .app import ListenError, run_daemon

    try:
        run_loop(run_daemon(settings))
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    return 0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed (less event-loop overhead per request on a small board), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _missing_default_files(settings: Settings) -> list[str]:
    manifest = load_manifest()
    items = wanted_files(manifest, _default_models(settings)[:1], ["cpu"])
    missing = []
    for item in items:
        try:
            resolve(settings.model_dir, item.ref, verify=False)
        except ModelFileError:
            missing.append(item.ref.file)
    return missing


def _pull(settings: Settings, model_ids: list[str], base_url: str | None) -> int:
    manifest = load_manifest()
    unknown = [m for m in model_ids if m not in manifest.models]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; see `perchd models list`", file=sys.stderr)
        return 1
    items = wanted_files(manifest, model_ids, _usable_kinds(settings), probe(settings.hardware_root).board.soc)
    print(f"pulling {len(items)} file(s) into {settings.model_dir}", file=sys.stderr)
    errors = pull(manifest, settings.model_dir, items, base_url)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    return 1 if errors else 0


def cmd_hardware(args: argparse.Namespace) -> int:
    root = args.root or os.environ.get("PERCHD_HARDWARE_ROOT") or "/"
    report = probe(Path(root))
    if args.json:
        plan = _detection_plan(args, report)
        detection = {"model": plan.model_id, "accelerator": plan.kind, "file": plan.file, "reasons": plan.reasons}
        print(json.dumps({**report.to_dict(), "detection": detection}, indent=2))
        return 0
    b = report.board
    print(f"board: {b.model or 'unknown'}  soc: {b.soc or 'unknown'}  cpu: {b.cpu_model or 'unknown'}"
          f" ({b.cores} cores)")
    print(f"{'accelerator':<10} {'present':<8} {'usable':<7} {'devices':<28} reason")
    for a in report.accelerators:
        devices = ",".join(a.devices) or "-"
        print(f"{a.kind:<10} {'yes' if a.present else 'no':<8} {'yes' if a.usable else 'no':<7} {devices:<28}"
              f" {a.reason}")
    plan = _detection_plan(args, report)
    print(f"detection: {plan.model_id} on {plan.kind}" + (f" ({plan.file})" if plan.file else ""))
    for reason in plan.reasons:
        print(f"  not on {reason}")
    return 0


def _detection_plan(args: argparse.Namespace, report: Any) -> Any:
    """What `run` would serve with this model directory, and why not on a better accelerator (no model opened)."""
    from .registry import ModelRegistry
    from .selection import plan

    registry = ModelRegistry(_settings(args), load_manifest(), report)
    return plan(registry, registry.default_model_id())


def cmd_models(args: argparse.Namespace) -> int:
    settings = _settings(args)
    manifest = load_manifest()
    if args.action == "import":
        return _import(settings, args)
    if args.action == "convert":
        from .accel_models import convert_rknn

        if len(args.models) != 1 or not args.target:
            print("usage: perchd models convert MODEL --target SOC [--python TOOLKIT_PYTHON]", file=sys.stderr)
            return 2
        rc, message = convert_rknn(settings, manifest, args.models[0], args.target, args.python)
        print(message, file=sys.stderr if rc else sys.stdout)
        return rc
    if args.action == "pull":
        ids = args.models or (list(manifest.models) if args.all else _default_models(settings))
        return _pull(settings, ids, args.base_url or os.environ.get("PERCHD_MODEL_MIRROR"))
    bad = 0
    rows = []
    for model_id, entry in manifest.models.items():
        for v in entry.variants:
            try:
                resolve(settings.model_dir, v, verify=args.action == "verify")
                state = "ok" if args.action == "verify" else "present"
            except ModelFileError as exc:
                state = "missing" if "not found" in str(exc) else "CORRUPT"
                bad += 1
                if args.action == "verify":
                    print(f"error: {exc}", file=sys.stderr)
            rows.append({"model": model_id, "task": entry.task, "accelerator": v.accelerator, "file": v.file,
                         "state": state, "license": entry.license})
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
    else:
        print(f"model dir: {settings.model_dir}")
        widths = {k: max(len(str(r[k])) for r in rows) for k in ("model", "task", "accelerator", "state")}
        for r in rows:
            print("  ".join(f"{r[k]:<{w}}" for k, w in widths.items()) + f"  {r['file']}")
        if args.action == "list":
            _print_loaded(settings.port)
    return 1 if args.action == "verify" and any(r["state"] == "CORRUPT" for r in rows) else 0


def _print_loaded(port: int) -> None:
    """What a daemon running on this box holds now, from its status route (nothing if none answers)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/system-status", timeout=3) as resp:
            memory = json.load(resp).get("memory") or {}
    except (OSError, ValueError):
        print(f"no daemon answers on port {port}: nothing is loaded")
        return
    print(f"daemon on port {port}: RSS {memory.get('rssMB', 0):.0f} MiB, budget {memory.get('budgetMB')} MiB,"
          f" {memory.get('evictions', 0)} unloaded for room, {memory.get('refusals', 0)} refused; loaded:")
    for m in memory.get("models", []):
        size = "?" if m.get("memoryMB") is None else f"{m['memoryMB']:.0f} MiB"
        print(f"  {m['id']:<28}{size:>10}")


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from .custom_models import CustomModelError, import_model

    if len(args.models) != 1 or not args.labels:
        print("usage: perchd models import FILE.onnx|FILE.hef --labels LABELS.txt [--name NAME] [--decoder D]",
              file=sys.stderr)
        return 2
    if args.models[0].endswith(".hef"):
        from .accel_models import import_hef

        try:
            print(import_hef(settings, load_manifest(), Path(args.models[0]), Path(args.labels), args.decoder,
                             args.name, args.size, args.force))
        except CustomModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    directory = settings.effective_custom_model_dir
    try:
        sidecar = import_model(directory, Path(args.models[0]), Path(args.labels), args.name, args.decoder,
                               args.force)
    except CustomModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"imported {sidecar.stem} into {directory}; POST images to /v1/vision/custom/{sidecar.stem}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging("warning")
    from .api.codeproject import detection_payload
    from .core import Core

    async def go() -> dict[str, Any]:
        core = Core(settings)
        try:
            if not args.model:
                from . import autoselect

                # `auto` decides as the daemon does (from the cached measurements after the daemon's first start).
                await autoselect.choose_default(core.registry, autoselect.cameras_fps(settings))
            model = await core.registry.get(args.model or core.registry.default_model_id())
            data = Path(args.image).read_bytes()
            result = await model.detect_bytes(data, args.min_confidence, settings.limits.max_pixels)
            return {"success": True, "model": model.id, **detection_payload(model, result)}
        finally:
            await core.close()

    try:
        payload = asyncio.run(go())
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"{payload['model']} on {payload['inferenceDevice']}: {payload['message']}"
              f" ({payload['inferenceMs']} ms inference)")
        for p in payload["predictions"]:
            print(f"  {p['label']:<16} {p['confidence']:.2f}  [{p['x_min']}, {p['y_min']}, {p['x_max']},"
                  f" {p['y_max']}]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    settings = _settings(args)
    return run_bench(settings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perchd", description="Perch edge-AI vision daemon")
    parser.add_argument("--config", help="YAML config file (default: $PERCHD_CONFIG or /etc/perchd/config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--port", type=int, help="CodeProject.AI listener port (default 32168)")
    p.add_argument("--pull", action="store_true", help="download missing default models first")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("hardware", help="print the accelerator probe report")
    p.add_argument("--json", action="store_true")
    p.add_argument("--root", help="probe a fake tree instead of /")
    p.set_defaults(func=cmd_hardware)

    p = sub.add_parser("models", help="list, verify, pull or import model files")
    p.add_argument("action", choices=["list", "verify", "pull", "import", "convert"])
    p.add_argument("models", nargs="*", help="model ids (pull; default: this machine's default models) or the"
                   " ONNX file to import")
    p.add_argument("--labels", help="import: labels file, one per line")
    p.add_argument("--name", help="import: model name (default: the file name without .onnx)")
    p.add_argument("--decoder", help="import: output decoder, when the tensor shapes do not tell")
    p.add_argument("--force", action="store_true", help="import: replace a custom model of the same name")
    p.add_argument("--size", help="import of a custom .hef: its input size, WIDTH or WIDTHxHEIGHT (default 640)")
    p.add_argument("--target", help="convert: the Rockchip SoC to build for (rk3588, rk3576, rk3568, rk3566, rk3562)")
    p.add_argument("--python", help="convert: Python of a venv with rknn-toolkit2 (default $PERCHD_RKNN_PYTHON or"
                   " ~/.cache/perchd/rknn-venv)")
    p.add_argument("--all", action="store_true", help="pull every model in the manifest")
    p.add_argument("--base-url", help="mirror serving the model directory layout (default: manifest URLs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("detect", help="detect objects in one image (same code path as the REST route)")
    p.add_argument("image")
    p.add_argument("--model")
    p.add_argument("--min-confidence", type=float, default=0.4)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("bench", help="raw vs REST latency and throughput, side by side")
    p.add_argument("--image", help="photo to use (default: dog_bicycle_car.jpg from the shared images)")
    p.add_argument("--model")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput measurement")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--rounds", type=int, default=4, help="blocks each figure is measured in, taking turns")
    p.add_argument("--cameras", default="2", help="camera lane: REST latency while N file:// cameras run (0: skip)")
    p.add_argument("--doods", help="DOODS2 checkout with its venv, measured beside Perch (or $PERCHD_BENCH_DOODS)")
    p.add_argument("--models", action="store_true", help="measure every `auto` candidate model and print the table")
    p.add_argument("--json", help="also write the figures to this file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("users", help="accounts for bearer-token auth (RAPYD-style): add | list | credits | remove")
    from .accounts import configure_cli

    configure_cli(p)

    p = sub.add_parser("update", help="update the SD-card image (RAUC): install FILE|URL|latest | status")
    from .update.cli import configure_cli as configure_update_cli

    configure_update_cli(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"perchd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

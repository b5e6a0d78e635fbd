"""`perchd update install FILE|URL|latest` and `perchd update status [--json]` (wired in daemon/__main__.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from .errors import UpdateError
from .installer import Reporter, install
from .progress import Progress
from .status import gather


def configure_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="update_action", required=True)
    p = sub.add_parser("install", help="install an update bundle (.raucb) from a file, an http(s) URL, or `latest`"
                                       " from the release feed; it starts after a reboot")
    p.add_argument("source", help="bundle path, http(s) URL, or `latest` (needs update.feed_url)")
    p = sub.add_parser("status", help="booted slot, both slots, image version and the last update's result")
    p.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_update)


def cmd_update(args: argparse.Namespace) -> int:
    from ..config import load_settings

    settings = load_settings(getattr(args, "config", None))
    if args.update_action == "status":
        status = asyncio.run(gather(settings.state_dir, settings.update.release_file))
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print_status(status, sys.stdout)
        return 0
    progress = Progress(sys.stderr)
    try:
        record = asyncio.run(_install(settings, args.source, progress))
    except UpdateError as exc:
        progress.end()
        print(f"perchd update: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.end()
        print("perchd update: interrupted; RAUC finishes or abandons the slot it was writing, the running system"
              " is unchanged", file=sys.stderr)
        return 130
    progress.end()
    back = record.from_version or record.from_slot
    print(f"installed {record.target_version or 'the bundle'} into {record.target_slot}: reboot to start it"
          f" (if it does not come up, the box goes back to {back} by itself)")
    return 0


async def _install(settings: Any, source: str, progress: Progress) -> Any:
    sha256 = None
    if source == "latest":
        from .feed import fetch_latest

        if not settings.update.feed_url:
            raise UpdateError("feed", "no release feed is configured (set update.feed_url)")
        release = await fetch_latest(settings.update.feed_url)
        if release is None:
            raise UpdateError("feed", f"the release feed {settings.update.feed_url} lists no release")
        print(f"latest release: {release.version} ({release.url})", file=sys.stderr)
        source, sha256 = release.url, release.sha256
    reporter = Reporter(download=progress.download, progress=progress.install)
    return await install(settings.state_dir, settings.update.release_file, source, reporter, sha256)


def _slot_line(slot: dict[str, Any]) -> str:
    name = f"{slot['name']} ({slot['bootname']})" if slot.get("bootname") else slot["name"]
    parts = [f"{name:<14}", f"{slot.get('state') or '?':<9}", f"{slot.get('boot_status') or '-':<5}",
             f"{slot.get('version') or 'version unknown':<16}"]
    if slot.get("installed"):
        parts.append(f"written {slot['installed']}")
    return "  ".join(parts).rstrip()


def print_status(status: dict[str, Any], out: TextIO) -> None:
    rauc = status["rauc"]
    out.write(f"image version:  {status.get('image_version') or 'unknown (not a Perch image)'}\n")
    if not rauc["available"]:
        out.write(f"RAUC:           {rauc['error']}\n")
        if status.get("booted_bootname"):
            out.write(f"booted slot:    {status['booted_bootname']} (kernel command line)\n")
    else:
        out.write(f"booted slot:    {status['booted_slot']} ({status.get('booted_bootname') or '?'})\n")
        if status.get("primary_slot"):
            nxt = status["primary_slot"]
            note = " (the same)" if nxt == status["booted_slot"] else " (a reboot switches to it)"
            out.write(f"next boot:      {nxt}{note}\n")
        out.write(f"installing:     {'yes' if rauc.get('operation') != 'idle' else 'no'}\n")
        out.write("slots:\n")
        for slot in status["slots"]:
            out.write(f"  {_slot_line(slot)}\n")
    last = status.get("last_update")
    if status.get("record_error"):
        out.write(f"last update:    {status['record_error']}\n")
    elif last is None:
        out.write("last update:    none recorded\n")
    else:
        out.write(f"last update:    {last['summary']}\n")
        times = [f"{k} {last[k]}" for k in ("started", "finished", "checked") if last.get(k)]
        out.write(f"                {', '.join(times)}\n")

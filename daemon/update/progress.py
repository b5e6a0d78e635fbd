"""Progress for `perchd update`: a redrawn bar on a terminal, plain lines (one per step) in logs and pipes."""

from __future__ import annotations

from typing import TextIO

WIDTH = 30


def bar(fraction: float) -> str:
    filled = int(WIDTH * max(0.0, min(1.0, fraction)))
    return f"[{'#' * filled}{'.' * (WIDTH - filled)}]"


class Progress:
    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._open = False  # a bar is drawn on the current line
        self._last_line: str | None = None
        self._last_tenth = -1
        self._phase = ""

    def _enter(self, phase: str) -> None:
        if phase != self._phase:
            self.end()
            self._phase = phase

    def _draw(self, text: str) -> None:
        # \r + clear to end of line: a shorter text must not leave the end of a longer one behind.
        self.out.write(f"\r\033[K{text}")
        self.out.flush()
        self._open = True

    def end(self) -> None:
        if self._open:
            self.out.write("\n")
            self.out.flush()
            self._open = False

    def download(self, done: int, total: int | None) -> None:
        self._enter("download")
        mb = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f}" if total else "") + " MB"
        if self.tty:
            self._draw(f"downloading {bar(done / total) if total else ''} {mb}")
            return
        # Plain output: a line per tenth (or per 10 MB without a length), not one per 64 KiB block.
        tenth = int(10 * done / total) if total else done // 10_000_000
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self.out.write(f"downloading {mb}\n")
            self.out.flush()

    def install(self, percent: int, message: str) -> None:
        self._enter("install")
        if self.tty:
            self._draw(f"installing {bar(percent / 100)} {percent:3d}% {message}")
            return
        line = f"{percent:3d}% {message}"
        if line != self._last_line:
            self._last_line = line
            self.out.write(line + "\n")
            self.out.flush()

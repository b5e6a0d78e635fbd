"""REST vs raw benchmark; the same as `perchd bench` (see daemon/bench.py for what is measured and why)."""

from __future__ import annotations

import sys

from perch.daemon.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

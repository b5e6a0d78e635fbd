"""Update failures as one line a person can act on, with a short code for programs (route, MQTT, --json)."""

from __future__ import annotations

import re

PIP_HINT = "pip install --upgrade perchd"


class UpdateError(Exception):
    """`code` is stable (for scripts and tests); the message is the one line shown to people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def no_rauc(reason: str) -> UpdateError:
    return UpdateError(
        "no-rauc",
        "updates apply to the Perch SD-card image only, and this system has no RAUC"
        f" ({reason}); to update a pip install run `{PIP_HINT}` in its virtual environment",
    )


def rauc_down(reason: str) -> UpdateError:
    return UpdateError("rauc-unavailable", f"the RAUC service does not answer ({reason}); see `systemctl status rauc`")


def busy(what: str = "an update is already being installed") -> UpdateError:
    return UpdateError("busy", f"{what}; wait for it to finish (see `perchd update status`)")


# RAUC's LastError texts (1.8) -> what went wrong for the person installing.
_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"signature verification failed|verify error|certificate|not signed", re.I), "refused-signature",
     "bundle refused: its signature does not match this system's keyring (signed with another key?)"),
    (re.compile(r"compatible mismatch", re.I), "refused-compatible",
     "bundle refused: it is made for another kind of system"),
    (re.compile(r"no space left|ENOSPC|too small|exceeds.*slot size", re.I), "no-space",
     "not enough space for the update"),
    (re.compile(r"already processing|already in progress|busy", re.I), "busy",
     "an update is already being installed"),
    (re.compile(r"invalid bundle|bundle format|signature size|squashfs|failed to mount|magic", re.I), "bad-bundle",
     "not a valid RAUC bundle (corrupt or truncated download?)"),
    (re.compile(r"no such file|not found|failed to open", re.I), "missing-file",
     "the bundle file cannot be read"),
]


def explain(last_error: str) -> UpdateError:
    """Map RAUC's error text to a clear line; RAUC's own words follow after a colon for the details."""
    detail = " ".join(last_error.split()) or "no reason given"
    for pattern, code, text in _RULES:
        if pattern.search(detail):
            return UpdateError(code, f"{text}: {detail}")
    return UpdateError("failed", f"installation failed: {detail}")

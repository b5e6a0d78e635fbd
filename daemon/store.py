"""Persistent state in one SQLite file under the state directory: registered faces and module settings.

WAL journal with synchronous=FULL: every commit is atomic and on disk before the route answers, so a kill -9 (or a
power cut on an SD card) in the middle of a face registration leaves the earlier faces and a consistent file.
One connection, serialised by a lock; callers on the event loop use asyncio.to_thread (a commit waits on fsync).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from .config import Settings

log = logging.getLogger("perch.store")

SCHEMA_VERSION = 1
MAX_USERID = 256
STORE_FILE = "perch.db"

# Settings that may change while the daemon runs (section -> fields); the routes read them per request, so a new
# value applies to the next request without a restart. Stored by section and field name.
RUNTIME_SETTINGS: dict[str, frozenset[str]] = {
    "detection": frozenset({"model", "min_confidence"}),
    "faces": frozenset({"min_confidence"}),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    userid    TEXT PRIMARY KEY,
    embedding BLOB NOT NULL,    -- float32 mean of every registered image's descriptor
    dims      INTEGER NOT NULL,
    images    INTEGER NOT NULL, -- how many descriptors the mean covers (to average new images in)
    created   REAL NOT NULL,
    updated   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    module  TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (module, name)
);
"""


class StoreError(ValueError):
    """A request the store refuses (bad userid, descriptor of the wrong size); the message is for the client."""


@dataclass(frozen=True)
class FaceGallery:
    """An immutable snapshot of the registered faces, shared by concurrent recognitions without copying."""

    userids: tuple[str, ...]
    vectors: np.ndarray  # [N, dims] float32

    def __len__(self) -> int:
        return len(self.userids)


def check_userid(userid: str | None) -> str:
    if userid is None or not userid.strip():
        raise StoreError("userid is required")
    if len(userid) > MAX_USERID or "\x00" in userid:
        raise StoreError(f"userid must be at most {MAX_USERID} characters of text")
    return userid


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit and left open.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._lock = threading.RLock()
        self._gallery: FaceGallery | None = None
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._tx():
                # executescript() would COMMIT first; the schema goes in this transaction instead.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{path} was written by a newer perchd (schema {version})")
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # ---- faces ------------------------------------------------------------------------------------------------

    def register_face(self, userid: str, descriptors: np.ndarray) -> Literal["added", "updated"]:
        """Average `descriptors` [n, dims] into the user's stored mean; one transaction."""
        check_userid(userid)
        vecs = np.asarray(descriptors, dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) == 0:
            raise StoreError("no face descriptor to register")
        n, dims = vecs.shape
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT embedding, dims, images FROM faces WHERE userid = ?", (userid,)).fetchone()
            if row is None:
                mean = vecs.mean(axis=0)
                db.execute("INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?)",
                           (userid, mean.astype("<f4").tobytes(), dims, n, now, now))
                outcome: Literal["added", "updated"] = "added"
            else:
                old = np.frombuffer(row[0], dtype="<f4")
                if row[1] != dims:
                    raise StoreError(f"descriptor size {dims} does not match the stored {row[1]}")
                count = int(row[2])
                mean = (old * count + vecs.sum(axis=0)) / (count + n)
                db.execute("UPDATE faces SET embedding = ?, images = ?, updated = ? WHERE userid = ?",
                           (mean.astype("<f4").tobytes(), count + n, now, userid))
                outcome = "updated"
            self._gallery = None
        return outcome

    def delete_face(self, userid: str) -> bool:
        check_userid(userid)
        with self._tx() as db:
            deleted = db.execute("DELETE FROM faces WHERE userid = ?", (userid,)).rowcount > 0
            self._gallery = None
        return deleted

    def list_faces(self) -> list[str]:
        return list(self.gallery().userids)

    def gallery(self) -> FaceGallery:
        """The registered faces, read once per change (recognition must not query SQLite per request)."""
        with self._lock:
            if self._gallery is None:
                rows = self._db.execute("SELECT userid, embedding, dims FROM faces ORDER BY userid").fetchall()
                dims = rows[0][2] if rows else 0
                usable = [r for r in rows if r[2] == dims]
                vectors = (np.stack([np.frombuffer(r[1], dtype="<f4") for r in usable]) if usable
                           else np.zeros((0, dims), np.float32))
                self._gallery = FaceGallery(tuple(r[0] for r in usable), vectors.astype(np.float32))
            return self._gallery

    # ---- module settings --------------------------------------------------------------------------------------

    def set_setting(self, module: str, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO settings VALUES (?, ?, ?, ?) ON CONFLICT (module, name) DO UPDATE SET"
                       " value = excluded.value, updated = excluded.updated", (module, name, value, time.time()))

    def settings(self, module: str | None = None) -> dict[str, dict[str, str]]:
        """{module: {name: value}} of every persisted setting (or one module's)."""
        with self._lock:
            if module is None:
                rows = self._db.execute("SELECT module, name, value FROM settings").fetchall()
            else:
                rows = self._db.execute("SELECT module, name, value FROM settings WHERE module = ?",
                                        (module,)).fetchall()
        out: dict[str, dict[str, str]] = {}
        for mod, name, value in rows:
            out.setdefault(mod, {})[name] = value
        return out


def apply_settings(settings: Settings, section: str, values: dict[str, Any]) -> None:
    """Validate `values` for one section and swap the section in one assignment (a request sees old or new)."""
    allowed = RUNTIME_SETTINGS.get(section, frozenset())
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise StoreError(f"{section}: {', '.join(unknown)} cannot be changed at run time")
    current = getattr(settings, section)
    try:
        updated = type(current).model_validate({**current.model_dump(), **values})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise StoreError(f"invalid value for {section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from exc
    setattr(settings, section, updated)


def apply_saved_settings(settings: Settings, store: Store) -> list[str]:
    """Re-apply the settings changed through the API on an earlier run; returns problems (logged, not fatal)."""
    problems = []
    for section, values in store.settings().items():
        try:
            apply_settings(settings, section, values)
        except (StoreError, AttributeError) as exc:
            problems.append(str(exc))
            log.warning("saved settings for %s ignored: %s", section, exc)
    return problems

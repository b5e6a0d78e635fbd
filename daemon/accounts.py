"""RAPYD-style accounts: email + password -> bearer token valid 60 minutes; one credit per successful request.

Its own SQLite file (`state_dir/accounts.db`, WAL) so the CLI (`perchd users …`) can edit accounts while the daemon
runs. Passwords: hashlib.scrypt with a random salt (parameters stored per row). Tokens: `secrets` random, stored only
as SHA-256 digests, looked up by digest and compared in constant time. In the daemon every database call runs on
one dedicated thread and scrypt on worker threads, so the event loop never waits on disk or on key stretching.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import hashlib
import hmac
import json
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TOKEN_TTL_S = 60 * 60
# scrypt cost: ~50 ms and 16 MiB per check on a Cortex-A76 class core; stored per row so it can be raised later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# Concurrent password checks: each one is CPU- and memory-heavy by design.
MAX_PARALLEL_SCRYPT = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    n INTEGER NOT NULL, r INTEGER NOT NULL, p INTEGER NOT NULL,
    credits INTEGER,              -- NULL = unlimited
    used INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest BLOB PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    expires REAL NOT NULL
);
"""


class AccountError(ValueError):
    """A request the store refuses (duplicate email, unknown account, bad value); the message says which."""


@dataclass(frozen=True)
class Account:
    account_id: str
    email: str
    credits: int | None  # None = unlimited
    used: int

    def public(self) -> dict[str, Any]:
        return asdict(self)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 1024 * 1024)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise AccountError(f"not an email address: {email!r}")
    return email


def _check_credits(credits: int | None) -> int | None:
    if credits is not None and credits < 0:
        raise AccountError("credits cannot be negative")
    return credits


class Accounts:
    """The account store. Sync methods for the CLI; `a*` coroutines for the daemon (off the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._scrypt_slots: asyncio.Semaphore | None = None
        # digest -> (account_id, expires): saves a read per request; the credit update still hits the database.
        self._token_cache: dict[bytes, tuple[str, float]] = {}
        self._has_accounts: bool | None = None
        self._checked_at = 0.0
        # A dummy hash to spend the same time on unknown emails as on wrong passwords (no account enumeration).
        self._dummy_salt = secrets.token_bytes(16)

    # ---- connection -----------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            with contextlib.suppress(OSError):
                self.path.chmod(0o600)  # password hashes: readable by the daemon's user only
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return fn(self._db())

    # ---- accounts (sync: CLI and executor thread) --------------------------------------------------------------

    def count(self) -> int:
        if self._conn is None and not self.path.exists():
            return 0  # no file yet: no accounts, and nothing is created just by asking
        return int(self._run(lambda db: db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]))

    def add(self, email: str, password: str, credits: int | None = None) -> Account:
        email = _check_email(email)
        credits = _check_credits(credits)
        if len(password) < 8:
            raise AccountError("the password must have at least 8 characters")
        salt = secrets.token_bytes(16)
        hashed = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        account_id = "acc_" + secrets.token_hex(8)

        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute("INSERT INTO accounts (account_id, email, salt, hash, n, r, p, credits, created)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (account_id, email, salt, hashed, SCRYPT_N, SCRYPT_R, SCRYPT_P, credits, time.time()))
            except sqlite3.IntegrityError as exc:
                raise AccountError(f"an account for {email} already exists") from exc

        self._run(insert)
        self._has_accounts = True
        return Account(account_id, email, credits, 0)

    def list_accounts(self) -> list[Account]:
        if self._conn is None and not self.path.exists():
            return []
        rows = self._run(lambda db: db.execute(
            "SELECT account_id, email, credits, used FROM accounts ORDER BY created").fetchall())
        return [Account(*row) for row in rows]

    def get(self, account_id: str) -> Account | None:
        row = self._run(lambda db: db.execute(
            "SELECT account_id, email, credits, used FROM accounts WHERE account_id = ?", (account_id,)).fetchone())
        return Account(*row) if row else None

    def set_credits(self, email: str, credits: int | None) -> Account:
        email = _check_email(email)
        credits = _check_credits(credits)

        def update(db: sqlite3.Connection) -> Account:
            db.execute("UPDATE accounts SET credits = ? WHERE email = ?", (credits, email))
            row = db.execute("SELECT account_id, email, credits, used FROM accounts WHERE email = ?",
                             (email,)).fetchone()
            if row is None:
                raise AccountError(f"no account for {email}")
            return Account(*row)

        return self._run(update)

    def remove(self, email: str) -> None:
        email = _check_email(email)

        def delete(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM accounts WHERE email = ?", (email,)).rowcount == 0:
                raise AccountError(f"no account for {email}")

        self._run(delete)
        self._token_cache.clear()
        self._has_accounts = None

    # ---- passwords and tokens -----------------------------------------------------------------------------

    def _credentials_row(self, email: str) -> tuple[str, bytes, bytes, int, int, int] | None:
        return self._run(lambda db: db.execute(
            "SELECT account_id, salt, hash, n, r, p FROM accounts WHERE email = ?",
            (email.strip().lower(),)).fetchone())

    def check_password(self, email: str, password: str) -> str | None:
        """The account id when the password is right, else None (same work either way)."""
        row = self._credentials_row(email) if self.count() else None
        if row is None:
            _scrypt(password, self._dummy_salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            return None
        account_id, salt, stored, n, r, p = row
        return account_id if hmac.compare_digest(_scrypt(password, salt, n, r, p), stored) else None

    def issue_token(self, account_id: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires = time.time() + TOKEN_TTL_S
        digest = _digest(token)

        def insert(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM tokens WHERE expires < ?", (time.time(),))
            db.execute("INSERT INTO tokens (digest, account_id, expires) VALUES (?, ?, ?)",
                       (digest, account_id, expires))

        self._run(insert)
        self._token_cache[digest] = (account_id, expires)
        return token, expires

    def token_account(self, token: str) -> str | None:
        """The account a live token belongs to, or None."""
        digest = _digest(token)
        now = time.time()
        cached = self._token_cache.get(digest)
        if cached is None:
            row = self._run(lambda db: db.execute(
                "SELECT digest, account_id, expires FROM tokens WHERE digest = ?", (digest,)).fetchone())
            if row is None or not hmac.compare_digest(bytes(row[0]), digest):
                return None
            cached = (row[1], row[2])
            if len(self._token_cache) > 10_000:
                self._token_cache.clear()
            self._token_cache[digest] = cached
        account_id, expires = cached
        if expires <= now:
            self._token_cache.pop(digest, None)
            return None
        return account_id

    # ---- credits ----------------------------------------------------------------------------------------------

    def reserve(self, account_id: str) -> bool | None:
        """Take one credit before the work (refunded if it fails). True: taken; False: none left; None: no such
        account (removed since the token was issued)."""

        def take(db: sqlite3.Connection) -> bool | None:
            cur = db.execute("UPDATE accounts SET credits = credits - 1 WHERE account_id = ? AND credits > 0",
                             (account_id,))
            if cur.rowcount:
                return True
            row = db.execute("SELECT credits FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
            if row is None:
                return None
            return row[0] is None  # unlimited: nothing to take

        return self._run(take)

    def settle(self, account_id: str, success: bool, reserved: bool) -> None:
        """Count a successful request, or give the reserved credit back after an error or refusal."""

        def update(db: sqlite3.Connection) -> None:
            if success:
                db.execute("UPDATE accounts SET used = used + 1 WHERE account_id = ?", (account_id,))
            elif reserved:
                db.execute("UPDATE accounts SET credits = credits + 1 WHERE account_id = ? AND credits IS NOT NULL",
                           (account_id,))

        self._run(update)

    # ---- async API for the daemon -----------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            # One thread owns the connection: SQLite calls are serialised and never run on the event loop.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perch-accounts")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def ahas_accounts(self, max_age_s: float = 1.0) -> bool:
        """Whether any account exists, re-read at most every `max_age_s` (the CLI may add one at any time)."""
        now = time.monotonic()
        if self._has_accounts is None or now - self._checked_at > max_age_s:
            self._has_accounts = await self._call(self.count) > 0
            self._checked_at = now
        return self._has_accounts

    async def alogin(self, email: str, password: str) -> tuple[str, str, float] | None:
        """(account_id, token, expires) for good credentials, else None."""
        if self._scrypt_slots is None:
            self._scrypt_slots = asyncio.Semaphore(MAX_PARALLEL_SCRYPT)
        row = await self._call(self._credentials_row, email) if await self.ahas_accounts(0) else None
        async with self._scrypt_slots:
            if row is None:
                await asyncio.to_thread(_scrypt, password, self._dummy_salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
                return None
            account_id, salt, stored, n, r, p = row
            computed = await asyncio.to_thread(_scrypt, password, salt, n, r, p)
        if not hmac.compare_digest(computed, stored):
            return None
        token, expires = await self._call(self.issue_token, account_id)
        return account_id, token, expires

    async def atoken_account(self, token: str) -> str | None:
        cached = self._token_cache.get(_digest(token))
        if cached is not None and cached[1] > time.time():
            return cached[0]
        return await self._call(self.token_account, token)

    async def aget(self, account_id: str) -> Account | None:
        return await self._call(self.get, account_id)

    async def areserve(self, account_id: str) -> bool | None:
        return await self._call(self.reserve, account_id)

    async def asettle(self, account_id: str, success: bool, reserved: bool) -> None:
        await self._call(self.settle, account_id, success, reserved)

    async def aclose(self) -> None:
        if self._executor is not None:
            await self._call(self._close_conn)
        self.close()

    def _close_conn(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def accounts_path(state_dir: Path) -> Path:
    return state_dir / "accounts.db"


# ---- `perchd users …` ---------------------------------------------------------------------------------------------


def configure_cli(parser: argparse.ArgumentParser) -> None:
    """The `users` subcommand tree (wired in daemon/__main__.py)."""
    sub = parser.add_subparsers(dest="users_action", required=True)
    p = sub.add_parser("add", help="create an account (password from stdin or a prompt)")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--credits", type=int, help="request credits (default: unlimited)")
    p = sub.add_parser("list", help="list accounts with their credits")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("credits", help="set an account's credits")
    p.add_argument("email")
    p.add_argument("credits", help="a number, or 'unlimited'")
    p = sub.add_parser("remove", help="delete an account and its tokens")
    p.add_argument("email")
    parser.set_defaults(func=cmd_users)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the passwords differ")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    from .config import load_settings

    settings = load_settings(getattr(args, "config", None))
    store = Accounts(accounts_path(settings.state_dir))
    try:
        if args.users_action == "add":
            account = store.add(args.email, _read_password(args.password_stdin), args.credits)
            print(f"added {account.email} ({account.account_id}), credits: {_credits(account.credits)}")
        elif args.users_action == "list":
            accounts = store.list_accounts()
            if args.json:
                print(json.dumps([a.public() for a in accounts], indent=2))
            else:
                print(f"{'account_id':<21} {'credits':>9} {'used':>7}  email")
                for a in accounts:
                    print(f"{a.account_id:<21} {_credits(a.credits):>9} {a.used:>7}  {a.email}")
        elif args.users_action == "credits":
            raw = args.credits.strip().lower()
            try:
                credits = None if raw == "unlimited" else int(raw)
            except ValueError as exc:
                raise AccountError(f"credits must be a number or 'unlimited', got {args.credits!r}") from exc
            account = store.set_credits(args.email, credits)
            print(f"{account.email}: credits {_credits(account.credits)}")
        elif args.users_action == "remove":
            store.remove(args.email)
            print(f"removed {args.email}")
    except (AccountError, sqlite3.Error, OSError) as exc:
        print(f"perchd users: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _credits(credits: int | None) -> str:
    return "unlimited" if credits is None else str(credits)

"""RAPYD-style accounts: the seed 002 token flow end to end with credits counted, the `perchd users` CLI, and how
passwords and tokens are stored."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from dialect_clients import curl_json, requests_call

from perch.daemon.__main__ import main
from perch.daemon.accounts import AccountError, Accounts, accounts_path
from perch.daemon.api.auth import GATE
from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import image_bytes

ClientFactory = Callable[..., Awaitable[TestClient]]
EMAIL, PASSWORD = "owner@example.org", "correct horse battery"


@pytest.fixture
def store(settings: Settings) -> Accounts:
    accounts = Accounts(accounts_path(settings.state_dir))
    accounts.add(EMAIL, PASSWORD, credits=3)
    yield accounts
    accounts.close()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, core: Core, store: Accounts) -> TestClient:
    return await aiohttp_client(create_app(core, CODEPROJECT))


def _image_form() -> FormData:
    fd = FormData()
    fd.add_field("image", image_bytes("pets.jpg"), filename="pets.jpg", content_type="image/jpeg")
    return fd


async def _login(client: TestClient) -> tuple[str, str]:
    # The seed's python: a JSON string body; its headers dict keeps the later of two Content-Types, text/plain.
    url = str(client.make_url("/v1/user/token"))
    payload = "{\n\t\"email\":\"" + EMAIL + "\",\n\t\"password\":\"" + PASSWORD + "\"\n}\n"
    headers = {"Content-Type": "application/json", "Content-Type": "text/plain"}  # noqa: F601 (as in the seed)
    response = await requests_call("POST", url, headers=headers, data=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    return body["account_id"], body["token"]


async def _credits(client: TestClient, account_id: str, token: str) -> Any:
    resp = await client.get("/v1/user/me", headers={"ACCOUNT-ID": account_id, "Authorization": f"Bearer {token}"})
    assert resp.status == 200
    return await resp.json()


async def test_seed_token_flow_with_credits(client: TestClient) -> None:
    # The seed's curl. It sends Content-Type twice, which aiohttp's HTTP parser refuses (400 "Duplicate
    # 'Content-Type' header", an RFC 9110 singleton: request-smuggling guard); with one of the two it works.
    status, body = await curl_json(
        "--location", "--request", "POST", str(client.make_url("/v1/user/token")),
        "--header", "Content-Type: text/plain",
        "--data-raw", json.dumps({"email": EMAIL, "password": PASSWORD}))
    assert status == 200 and body["token"] and body["account_id"].startswith("acc_")
    account_id, token = await _login(client)
    me = await _credits(client, account_id, token)
    assert me == {"account_id": account_id, "email": EMAIL, "credits": 3, "used": 0}
    headers = {"ACCOUNT-ID": account_id, "Authorization": f"Bearer {token}"}

    # Success: one credit each, across dialects.
    body = await (await client.post("/v1/vision/detection", data=_image_form(), headers=headers)).json()
    assert body["success"] is True and body["predictions"][0]["label"] == "dog"
    resp = await client.post("/v1/predict/default", data=_image_form(), headers=headers)
    assert resp.status == 200
    assert (await _credits(client, account_id, token))["credits"] == 1
    # Errors and refusals cost nothing.
    fd = FormData()
    fd.add_field("image", b"not an image", filename="x.jpg")
    body = await (await client.post("/v1/vision/detection", data=fd, headers=headers)).json()
    assert body["success"] is False and body["code"] == 400
    assert (await client.post("/v1/predict/default", data=FormData({"size": "1"}), headers=headers)).status == 400
    wrong_account = {**headers, "ACCOUNT-ID": "acc_0000000000000000"}
    body = await (await client.post("/v1/vision/detection", data=_image_form(), headers=wrong_account)).json()
    assert body["success"] is False and body["code"] == 401
    assert (await _credits(client, account_id, token))["credits"] == 1
    # The last credit, then a refusal in the dialect's shape.
    encoded = base64.b64encode(image_bytes("pets.jpg")).decode()
    assert (await client.post(f"/default/1?api_key={token}", data=encoded)).status == 200
    body = await (await client.post("/v1/vision/detection", data=_image_form(), headers=headers)).json()
    assert body["success"] is False and body["code"] == 402 and "credits" in body["error"]
    me = await _credits(client, account_id, token)
    assert me["credits"] == 0 and me["used"] == 3


async def test_login_failures_and_me(client: TestClient) -> None:
    for payload in ({"email": EMAIL, "password": "wrong password"}, {"email": "nobody@example.org",
                                                                      "password": PASSWORD}):
        resp = await client.post("/v1/user/token", json=payload)
        assert resp.status == 401 and (await resp.json())["success"] is False
    for raw in (b"not json", b"[1, 2]", b'{"email": "x@y.z"}'):
        assert (await client.post("/v1/user/token", data=raw)).status == 400
    # The seed's JavaScript: Headers.append twice joins both types into one header; its raw body.
    raw = "{\n	\"email\":\"" + EMAIL + "\",\n	\"password\":\"" + PASSWORD + "\"\n}\n"
    resp = await client.post("/v1/user/token", data=raw, headers={"Content-Type": "application/json, text/plain"})
    assert resp.status == 200 and (await resp.json())["token"]
    # The seed's R (httr, encode = "json") sends plain JSON; form-encoded credentials work too.
    resp = await client.post("/v1/user/token", data={"email": EMAIL, "password": PASSWORD})
    assert resp.status == 200
    assert (await client.get("/v1/user/me")).status == 401
    assert (await client.get("/v1/user/me", headers={"Authorization": "Bearer made-up"})).status == 401
    # With an account present, routes without a credential are refused; ping stays open.
    body = await (await client.post("/v1/vision/detection", data=_image_form())).json()
    assert body["code"] == 401
    assert (await client.get("/v1/status/ping")).status == 200


async def test_expired_token_and_deepstack_listener(aiohttp_client: ClientFactory, core: Core,
                                                    store: Accounts) -> None:
    ds = await aiohttp_client(create_app(core, DEEPSTACK))
    _, token = await _login(ds)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await ds.post("/v1/vision/detection", data=_image_form(), headers=headers)).status == 200
    # Expire it in the database the way 60 minutes would, and drop the listener's cache of it.
    db = sqlite3.connect(accounts_path(core.settings.state_dir))
    db.execute("UPDATE tokens SET expires = ?", (time.time() - 1,))
    db.commit()
    db.close()
    ds.app[GATE].accounts._token_cache.clear()
    assert (await ds.post("/v1/vision/detection", data=_image_form(), headers=headers)).status == 401


def test_storage_hashes_and_digests(store: Accounts, settings: Settings) -> None:
    token, _ = store.issue_token(store.list_accounts()[0].account_id)
    store.add("second@example.org", PASSWORD)
    raw = b"".join(p.read_bytes() for p in settings.state_dir.glob("accounts.db*"))
    assert PASSWORD.encode() not in raw and token.encode() not in raw
    db = sqlite3.connect(accounts_path(settings.state_dir))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    salts = [row[0] for row in db.execute("SELECT salt FROM accounts")]
    hashes = [row[0] for row in db.execute("SELECT hash FROM accounts")]
    db.close()
    assert len(set(salts)) == 2 and len(set(hashes)) == 2, "same password, different salt and hash"
    assert store.check_password(EMAIL, PASSWORD) and not store.check_password(EMAIL, "nope")
    assert store.token_account(token) and not store.token_account(token + "x")
    with pytest.raises(AccountError, match="already exists"):
        store.add(EMAIL.upper(), PASSWORD)
    with pytest.raises(AccountError):
        store.add("not-an-email", PASSWORD)
    with pytest.raises(AccountError):
        store.add("short@example.org", "short")


def test_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("PERCHD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PERCHD_CONFIG", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", EMAIL, "--password-stdin", "--credits", "5"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", EMAIL, "--password-stdin"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "credits", EMAIL, "12"]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["email"], a["credits"], a["used"]) for a in listed] == [(EMAIL, 12, 0)]
    assert main(["users", "credits", EMAIL, "unlimited"]) == 0
    assert main(["users", "list"]) == 0
    assert "unlimited" in capsys.readouterr().out
    accounts = Accounts(tmp_path / "state" / "accounts.db")
    assert accounts.check_password(EMAIL, PASSWORD) is not None
    accounts.close()
    assert main(["users", "remove", EMAIL]) == 0
    assert main(["users", "credits", EMAIL, "1"]) == 1


async def test_accounts_switch_auth_on_for_a_running_daemon(aiohttp_client: ClientFactory, core: Core,
                                                            settings: Settings) -> None:
    client = await aiohttp_client(create_app(core, CODEPROJECT))
    assert (await (await client.post("/v1/vision/detection", data=_image_form())).json())["success"] is True
    # `perchd users add` from another process: the daemon notices within a second.
    other = Accounts(accounts_path(settings.state_dir))
    other.add(EMAIL, PASSWORD)
    other.close()
    client.app[GATE].accounts._checked_at = 0.0  # skip the wait instead of sleeping through it
    body = await (await client.post("/v1/vision/detection", data=_image_form())).json()
    assert body["success"] is False and body["code"] == 401

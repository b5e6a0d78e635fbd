"""Load for the reliability tests: requests of every dialect, prebuilt as raw HTTP/1.1 bytes, sent over keep-alive
connections by a deliberately thin asyncio client (on a 2-core machine a heavyweight client would measure itself),
plus a health-check prober and a do-nothing control server in their own processes.

Each request kind knows how its dialect answers a success and a "busy" refusal, so tests can say "every request was
answered, either with a result or with the dialect's busy answer" and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Kind:
    """One kind of request: its raw bytes (per port) and what a success / a busy refusal look like."""

    name: str
    path: str
    content_type: str
    body: bytes
    ok: Callable[[Answer], bool]
    busy: Callable[[Answer], bool]
    legacy: bool = False  # sent to the DeepStack listener

    def raw(self, port: int) -> bytes:
        return _raw(self.path, self.content_type, self.body, port)


@functools.lru_cache(maxsize=64)
def _raw(path: str, content_type: str, body: bytes, port: int) -> bytes:
    """Built once per kind and port, not per request: the client must cost the 2-core machine next to nothing."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def multipart(files: dict[str, bytes], fields: dict[str, str] | None = None) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (fields or {}).items()]
    for name, data in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def _retry_after(a: Answer) -> bool:
    return a.headers.get("retry-after", "").isdigit()


def _cp_ok(a: Answer) -> bool:
    return a.status == 200 and a.json().get("success") is True


def _cp_busy(a: Answer) -> bool:
    # CodeProject semantics: HTTP 200, success:false and the status it would have been in `code`.
    body = a.json()
    return a.status == 200 and body.get("success") is False and body.get("code") == 503 and _retry_after(a)


def _ds_busy(a: Answer) -> bool:
    return a.status == 503 and a.json().get("success") is False and _retry_after(a)


def kinds(jpeg: bytes, face_jpeg: bytes) -> dict[str, Kind]:
    """Every dialect's detection-style request, plus faces and scene on the CodeProject listener."""
    out: dict[str, Kind] = {}

    def add(name: str, path: str, ctype_body: tuple[str, bytes], ok: Callable[[Answer], bool],
            busy: Callable[[Answer], bool], legacy: bool = False) -> None:
        out[name] = Kind(name, path, ctype_body[0], ctype_body[1], ok, busy, legacy)

    image = multipart({"image": jpeg})
    add("detection", "/v1/vision/detection", image, _cp_ok, _cp_busy)
    add("deepstack", "/v1/vision/detection", image, _cp_ok, _ds_busy, legacy=True)
    add("face", "/v1/vision/face", multipart({"image": face_jpeg}), _cp_ok, _cp_busy)
    add("scene", "/v1/vision/scene", image, _cp_ok, _cp_busy)
    add("ultralytics", "/v1/predict/default", image,
        lambda a: a.status == 200 and a.json().get("success") is True and isinstance(a.json().get("data"), list),
        lambda a: a.status == 503 and a.json().get("success") is False and bool(a.json().get("message"))
        and _retry_after(a))
    add("roboflow", "/default/1", ("application/x-www-form-urlencoded", base64.b64encode(jpeg)),
        lambda a: a.status == 200 and isinstance(a.json().get("predictions"), list),
        lambda a: a.status == 503 and bool(a.json().get("message")) and _retry_after(a))
    add("raypack", "/recog", multipart({"file": jpeg}, {"model": "1", "threshold": "0.5"}),
        lambda a: a.status == 200 and "results" in a.json(),
        lambda a: a.status == 503 and a.json().get("code") == 503 and bool(a.json().get("error"))
        and _retry_after(a))
    return out


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


@dataclass
class Result:
    kind: str
    started: float  # time.monotonic()
    seconds: float
    answer: Answer | None = None
    error: str | None = None


@dataclass
class Connection:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    opened: int = field(default=0)

    async def send(self, raw: bytes, timeout: float) -> Answer:
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port),
                                                                  timeout)
                self.opened += 1
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(raw)
                answer = await asyncio.wait_for(read_answer(self.reader), timeout)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                # A keep-alive connection the server closed while idle: HTTP clients resend on a new one.
                if fresh or attempt:
                    raise
                continue
            if answer.headers.get("connection", "").lower() == "close":
                self.close()
            return answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one(conn: Connection, kind: Kind, timeout: float) -> Result:
    started = time.monotonic()
    try:
        answer = await conn.send(kind.raw(conn.port), timeout)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        conn.close()
        return Result(kind.name, started, time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
    return Result(kind.name, started, time.monotonic() - started, answer)


# -- health-check prober and control server, each in its own process ----------------------------------------------

_PROBE = r"""
import http.client, json, sys, time
port, seconds, gap = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
out = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/v1/status/ping")
        ok = c.getresponse().status == 200
        c.close()
    except OSError:
        ok = False
    out.append((time.perf_counter() - t) * 1000 if ok else None)
    time.sleep(gap)
print(json.dumps(out))
"""

_CONTROL = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Prober:
    """GET /v1/status/ping on a new connection every `gap` seconds (as a load balancer's health check does),
    from a separate process so that the test's own load never delays it; latencies in ms, None for a failure."""

    def __init__(self, port: int, seconds: float, gap: float = 0.02) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(port), str(seconds), str(gap)],
                                     stdout=subprocess.PIPE, text=True)

    def result(self, timeout: float = 120) -> list[float | None]:
        out, _ = self.proc.communicate(timeout=timeout)
        return list(json.loads(out))


class ControlServer:
    """A do-nothing HTTP server: its latency under the same load is the machine's own noise."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _CONTROL], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait(10)


def small_jpeg(path: Any, width: int = 320, quality: int = 80) -> bytes:
    """The photo scaled to `width` pixels: what a camera sends Frigate-style, and cheap for a 2-core load test."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buf.tobytes())


async def run_clients(ports: dict[str, int], plan: list[Kind], seconds: float, timeout: float,
                      think_s: float = 0.0) -> list[Result]:
    """len(plan) clients, client i sending plan[i] on its own keep-alive connection for `seconds`: back to back,
    or with `think_s` between an answer and the next request (a person or a camera server, not a benchmark)."""
    results: list[Result] = []
    deadline = time.monotonic() + seconds

    async def client(kind: Kind) -> None:
        conn = Connection(ports["legacy" if kind.legacy else "main"])
        try:
            while time.monotonic() < deadline:
                results.append(await one(conn, kind, timeout))
                if think_s:
                    await asyncio.sleep(think_s)
        finally:
            conn.close()

    await asyncio.gather(*(client(k) for k in plan))
    return results


_FRIGATE = r"""
import json, sys, time
import requests
url, seconds, jpeg_path, timeout = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
jpeg = open(jpeg_path, "rb").read()
out = []
end = time.time() + seconds
while time.time() < end:
    t = time.time()
    try:
        # As Frigate's deepstack detector sends it: a new connection per frame, a 100 ms timeout by default.
        r = requests.post(url, files={"image": ("image.jpg", jpeg, "image/jpeg")}, timeout=timeout)
        ok = r.status_code == 200 and r.json().get("success") is True
    except (requests.RequestException, ValueError):
        ok = False
    out.append((t, ok))
print(json.dumps(out))
"""


class FrigateClient:
    """Frigate's deepstack detector: one request at a time, each with a short timeout; (start time, success)
    pairs, from a separate process so the test's own load never delays it."""

    def __init__(self, url: str, seconds: float, jpeg_path: Any, timeout: float = 0.1) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _FRIGATE, url, str(seconds), str(jpeg_path),
                                      str(timeout)], stdout=subprocess.PIPE, text=True)

    def result(self, timeout: float = 300) -> list[tuple[float, bool]]:
        out, _ = self.proc.communicate(timeout=timeout)
        return [(float(t), bool(ok)) for t, ok in json.loads(out)]

"""The dashboard in a real browser (Debian's headless Chromium) against a live `perchd run` with a Mosquitto broker
and an HTTP MJPEG camera: what the panels show, live frames, an event when a person walks in, "try it", a model
change, errors in words, API keys, no console errors and no request to any other host. A screenshot of every panel
at phone and laptop width is written to $PERCHD_SCREENSHOTS (default: the test's temporary directory).

The tests share one daemon and one browser and run in file order (each builds on the page the previous one left).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import IMAGES, MODELS, free_port
from helpers.browser import LAPTOP, PHONE, BrowserLog, browser_missing, screenshot_dir, start_browser
from helpers.mjpeg_server import MjpegServer
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.rtsp_server import make_clip

MISSING = browser_missing() or mosquitto_available()
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"browser tests cannot run under CI: {MISSING}")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=str(MISSING))

PANELS = ("hardware", "models", "charts", "cameras", "tryit", "logs")
WAIT_S = 60.0


@dataclass
class Box:
    url: str
    camera: MjpegServer
    person: Path
    state_dir: Path
    proc: subprocess.Popen[str]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "")

    def json(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except Exception as exc:  # the page may be between renders
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    tmp = tmp_path_factory.mktemp("dashboard")
    # An empty wall (one frame: nothing moves, so nothing is detected), then a person in front of it.
    empty = make_clip(tmp / "empty", IMAGES / "squat.bmp", kind="cut", empty_s=0.1, object_s=0, after_s=0, fps=10)
    person = make_clip(tmp / "person", IMAGES / "squat.bmp", kind="still")
    with Mosquitto(tmp) as broker, MjpegServer(empty, fps=10) as camera:
        config = tmp / "perchd.yaml"
        config.write_text(
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}, topic_prefix: perch}}\n"
            "cameras:\n"
            "  - name: porch\n"
            f"    url: {camera.url}\n"
            "    detect: {fps: 5, labels: [person], min_score: 0.5}\n"
            "web: {stream_fps: 5}\n")
        port = free_port()
        state = tmp / "state"
        env = dict(os.environ, PERCHD_CONFIG=str(config), PERCHD_MODEL_DIR=str(MODELS), PERCHD_STATE_DIR=str(state),
                   PERCHD_CACHE_DIR=str(tmp / "cache"), PERCHD_LEGACY_PORT="0", PERCHD_HOST="127.0.0.1")
        log = (tmp / "perchd.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        found = Box(f"http://127.0.0.1:{port}", camera, person, state, proc)
        try:
            wait_for("the daemon and its camera",
                     lambda: found.json("/v1/status/system-status")["cameras"]["porch"]["online"])
            yield found
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
        assert proc.returncode == 0, (tmp / "perchd.log").read_text()[-3000:]


@dataclass
class Page:
    driver: Any
    log: BrowserLog
    shots: Path

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, selector: str) -> str:
        return str(self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector))

    def screenshot(self, width_name: str, width: int) -> None:
        # A window as tall as the page, so that a long panel is captured whole (the layout follows the width).
        self.driver.set_window_size(width, int(self.js("return document.documentElement.scrollHeight")) + 100)
        for panel in PANELS:
            # Through DevTools with the panel's page coordinates: WebElement.screenshot cropped from a scrolled
            # viewport and came out shifted by a few hundred pixels on a tall page.
            rect = self.js("const r = document.getElementById(arguments[0]).getBoundingClientRect();"
                           " return {x: r.left + window.scrollX, y: r.top + window.scrollY,"
                           " width: r.width, height: r.height};", panel)
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True, "clip": {**rect, "scale": 1}})
            (self.shots / f"{width_name}-{panel}.png").write_bytes(base64.b64decode(shot["data"]))
        self.js("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.shots / f"{width_name}-page.png"))


@pytest.fixture(scope="module")
def page(box: Box, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    tmp = tmp_path_factory.mktemp("browser")
    driver = start_browser(tmp)
    try:
        driver.get(box.url + "/")
        yield Page(driver, BrowserLog(driver), screenshot_dir(tmp / "screenshots"))
    finally:
        driver.quit()


def test_hardware_and_model_panels_show_system_status(box: Box, page: Page) -> None:
    status = box.json("/v1/status/system-status")
    board = status["hardware"]["board"]
    wait_for("the hardware panel", lambda: page.text("#hardware [data-field=board]") not in ("", None))
    assert page.text("#hardware [data-field=board]") == (board["model"] or board["cpu_model"] or "unknown board")
    assert page.text("#hardware [data-field=soc]") == (board["soc"] or "not identified")
    assert page.text("#hardware [data-field=temperature]")
    loaded = [m for m in status["models"] if m.get("available", True)]
    for acc in status["hardware"]["accelerators"]:
        row = page.text(f"#hardware tr[data-accelerator={acc['kind']}]")
        cells = row.split("\t")
        assert cells[:3] == [acc["kind"], "yes" if acc["present"] else "no", "yes" if acc["usable"] else "no"], row
        assert acc["reason"] in row
        for model in loaded:
            if model["accelerator"] == acc["kind"]:
                assert model["id"] in cells[4]
    held = {m["id"]: m["memoryMB"] for m in status["memory"]["models"]}
    for model in loaded:
        row = wait_for(f"model {model['id']}", lambda m=model: page.text(f"#models tr[data-model={m['id']}]"))
        assert model["inferenceDevice"] in row
        if held.get(model["id"]) is not None:
            assert page.text(f"#models tr[data-model={model['id']}] [data-field=memory]").endswith(" MiB")
    assert f"of the {status['memory']['budgetMB']} MiB budget" in page.text("#models [data-field=memory-budget]")


def test_camera_tile_shows_live_frames(page: Page) -> None:
    frames = wait_for("live frames in the porch tile", lambda: page.js(
        "const i = document.querySelector('[data-camera=porch] img.live');"
        "return i && i.naturalWidth && Number(i.dataset.frames) >= 3 ? [i.naturalWidth, i.naturalHeight] : null;"))
    assert frames == [640, 480]
    assert page.text("[data-camera=porch] .badge") == "online"


def test_event_appears_after_a_person_walks_in(box: Box, page: Page) -> None:
    assert not page.js("return document.querySelector('#cameras li[data-label=person]')")
    box.camera.show(box.person)
    wait_for("a person event with its snapshot", lambda: page.js(
        "const i = document.querySelector('#cameras li[data-label=person] img.thumb');"
        "return i && i.complete && i.naturalWidth > 0;"))
    events = box.json("/cameras/events")["events"]
    assert events[0]["label"] == "person" and events[0]["camera"] == "porch"
    assert "person" in page.text("#cameras li[data-label=person]")
    wait_for("the tile to count the person", lambda: "1 person" in page.text("[data-camera=porch] .facts"))


def test_try_it_draws_boxes_and_lists_labels(box: Box, page: Page) -> None:
    photo = IMAGES / "dog_bicycle_car.jpg"
    page.driver.find_element("id", "tryit-file").send_keys(str(photo))
    page.js("document.getElementById('tryit-route').value = 'objects'")
    page.driver.find_element("id", "tryit-send").click()
    wait_for("the try-it answer", lambda: page.js("return document.getElementById('tryit-result').dataset.state")
             == "done")
    boxes = page.js("return [...document.querySelectorAll('#tryit-result g.box')].map(g => g.dataset.label)")
    labels = page.js("return [...document.querySelectorAll('#tryit-result .labels li')].map(l => l.dataset.label)")
    assert boxes and labels
    assert {"dog", "bicycle", "car"} <= set(labels)
    assert sorted(boxes) == sorted(labels)
    assert page.js("return document.querySelector('#tryit-result pre.json').textContent.includes('predictions')")


@pytest.mark.parametrize(("route", "photo", "expect"), [
    ("faces", "face.jpg", "face"), ("plates", "plate_wa_azm9591.jpg", "Plate:"), ("scene", "parrot.jpg", "")])
def test_try_it_other_routes(page: Page, route: str, photo: str, expect: str) -> None:
    page.driver.find_element("id", "tryit-file").send_keys(str(IMAGES / photo))
    page.js("document.getElementById('tryit-route').value = arguments[0]", route)
    page.driver.find_element("id", "tryit-send").click()
    state = wait_for(f"the {route} answer", lambda: page.js(
        "const s = document.getElementById('tryit-result').dataset.state; return s === 'busy' ? null : s;"))
    assert state == "done", page.text("#tryit .error")
    answer = json.loads(page.js("return document.querySelector('#tryit-result pre.json').textContent"))
    labels = page.text("#tryit-result .labels")
    if route == "scene":
        assert answer["label"] in labels  # one label for the whole picture, no boxes
    else:
        boxes = page.js("return document.querySelectorAll('#tryit-result g.box').length")
        assert boxes == len(answer["predictions"]) > 0 and expect in labels


def test_screenshots_at_phone_and_laptop_width(page: Page) -> None:
    def geometry() -> dict[str, dict[str, float]]:
        return dict(page.js("const out = {}; for (const id of arguments[0]) {"
                            " const r = document.getElementById(id).getBoundingClientRect();"
                            " out[id] = {x: r.x, y: r.y, w: r.width}; } return out;", list(PANELS)))

    page.driver.set_window_size(*LAPTOP)
    # Lines, not just the open bucket's dot: the first 10-s bucket has closed by now or within seconds.
    wait_for("the charts' lines", lambda: page.js("return document.querySelectorAll('#charts polyline').length") >= 2)
    laptop = geometry()
    # A grid: hardware and models side by side.
    assert laptop["models"]["x"] > laptop["hardware"]["x"] and abs(laptop["models"]["y"] - laptop["hardware"]["y"]) < 2
    page.screenshot("laptop", LAPTOP[0])
    page.driver.set_window_size(*PHONE)
    phone = wait_for("one column", lambda: (g := geometry()) and len({round(p["x"]) for p in g.values()}) == 1 and g)
    assert phone["models"]["y"] > phone["hardware"]["y"]
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.js("return document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot("phone", PHONE[0])
    page.driver.set_window_size(*LAPTOP)
    assert all((page.shots / f"{w}-{p}.png").stat().st_size > 1000 for w in ("phone", "laptop") for p in PANELS)


def test_model_change_from_the_page_takes_effect(box: Box, page: Page) -> None:
    def choose(selector: str, value: str) -> None:
        page.js("const e = document.querySelector(arguments[0]); e.value = arguments[1];"
                "e.dispatchEvent(new Event('change'));", selector, value)

    wait_for("the model selector",
             lambda: page.js("return document.querySelector('#model-select option[value=yolox_nano]')"))
    choose("#model-select", "yolox_nano")
    wait_for("the model to be set", lambda: "model set to yolox_nano" in page.text("#settings-message"))
    assert box.json("/v1/settings/ObjectDetectionPerch")["settings"]["model"] == "yolox_nano"
    assert any(m["id"] == "yolox_nano" for m in box.json("/v1/status/system-status")["models"])
    choose("#min-confidence", "0.55")
    wait_for("min_confidence to be set", lambda: "min_confidence set to 0.55" in page.text("#settings-message"))
    assert box.json("/v1/settings/ObjectDetectionPerch")["settings"]["min_confidence"] == 0.55
    choose("#model-select", "auto")
    wait_for("the model to be back on auto", lambda: "model set to auto" in page.text("#settings-message"))


def test_api_errors_are_shown_in_words(page: Page, tmp_path: Path) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("this is not a photo")
    page.driver.find_element("id", "tryit-file").send_keys(str(note))
    page.driver.find_element("id", "tryit-send").click()
    message = wait_for("the error", lambda: page.text("#tryit .error"))
    assert message.startswith("⚠") and "image" in message.lower(), message
    assert page.js("return document.getElementById('tryit-form') !== null")  # the form is still there


def test_no_console_errors(page: Page) -> None:
    assert page.log.errors() == []


def test_api_keys_page_asks_for_a_key_and_sends_it(box: Box, page: Page) -> None:
    from perch.daemon.accounts import Accounts, accounts_path

    accounts = Accounts(accounts_path(box.state_dir))
    accounts.add("viewer@example.org", "a long enough password")
    accounts.close()
    token = box.json("/v1/user/token", json.dumps({"email": "viewer@example.org", "password":
                                                   "a long enough password"}).encode(),
                     {"Content-Type": "application/json"})["token"]
    # The stream and snapshot routes want the key too: in a header, or as ?api_key= for players and <img> tags.
    wait_for("keys to be on", lambda: box.get("/cameras/porch/snapshot.jpg")[0] == 401)
    _, body, ctype = box.get("/cameras/porch/snapshot.jpg")
    assert ctype.startswith("application/json") and "unauthorized" in json.loads(body)["error"]
    assert box.get("/cameras/porch/snapshot.jpg", {"Authorization": f"Bearer {token}"})[0] == 200
    assert box.get(f"/cameras/porch/snapshot.jpg?api_key={token}")[0] == 200

    page.driver.get(box.url + "/")
    wait_for("the key dialog", lambda: page.js("return document.getElementById('key-dialog').open"))
    page.driver.save_screenshot(str(page.shots / "laptop-key-dialog.png"))
    assert "API keys" in page.text("#key-message")
    page.driver.find_element("id", "key-input").send_keys("not-the-key\n")
    wait_for("the refusal in words", lambda: "refused" in page.text("#key-message")
             and page.js("return document.getElementById('key-dialog').open"))
    assert "invalid API key or token" in page.text("#key-message")
    page.driver.find_element("id", "key-input").send_keys(token + "\n")
    wait_for("the panels with the key", lambda: page.text("#hardware [data-field=board]"))
    wait_for("live frames with the key", lambda: page.js(
        "const i = document.querySelector('[data-camera=porch] img.live');"
        "return i && Number(i.dataset.frames) >= 2;"))
    assert not page.js("return document.getElementById('key-dialog').open")
    # The only console errors: the refusals of the wrong key, if the browser logged any.
    assert [e for e in page.log.errors() if "401" not in e] == []


def test_no_request_leaves_for_another_host(box: Box, page: Page) -> None:
    assert page.log.foreign(box.url) == []
    assert any(u.startswith(box.url + "/cameras/porch/stream.mjpeg") for u in page.log.urls)


def test_a_stopped_daemon_is_said_in_words(box: Box, page: Page) -> None:
    """Last: stop the daemon under the open page; every panel that polls says why it cannot update."""
    box.proc.terminate()
    box.proc.wait(timeout=30)
    message = wait_for("the banner", lambda: page.text("#banner"))
    assert "cannot reach the Perch daemon" in message
    for panel in ("hardware", "models", "cameras"):
        assert "cannot reach the Perch daemon" in page.text(f"#{panel} .error")
    # The last good content stays under the error instead of a blank panel.
    assert page.text("#hardware [data-field=board]")

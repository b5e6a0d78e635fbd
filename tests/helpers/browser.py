"""Headless Chromium from Debian (packages chromium, chromium-driver) driven by selenium, for the dashboard tests.

Selenium is given both paths, so it never starts Selenium Manager (which would try to download a browser). The
flags keep Chromium from phoning home (no component updates, sync, QUIC or background networking), which the
tests check: every request the page makes must go to the daemon under test.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")
LAPTOP = (1366, 900)
PHONE = (390, 844)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None. Under CI a missing browser is a failure, not a skip."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"Debian package {package} not installed ({path} missing)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python package selenium not installed (pip install -e '.[test]')"
    return None


def start_browser(profile_parent: Path) -> Any:
    """A Chrome WebDriver with console and network (performance) logs on, in a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=profile_parent)}")
    options.add_argument(f"--window-size={LAPTOP[0]},{LAPTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # No Selenium Manager: the driver path is given, and it must not look for one on the network either.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver


class BrowserLog:
    """Accumulates the console and network logs (selenium hands each entry out only once)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.console: list[dict[str, Any]] = []
        self.urls: list[str] = []

    def collect(self) -> None:
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.urls.append(message["params"]["request"]["url"])

    def errors(self) -> list[str]:
        self.collect()
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"]

    def foreign(self, origin: str) -> list[str]:
        """Network requests to anywhere but `origin`. blob: and data: URLs are the page's own, and chrome:// ones
        (the new-tab page shown before the test navigates) are the browser's, not the network's."""
        self.collect()
        own = urlsplit(origin).netloc
        return [u for u in self.urls if urlsplit(u).scheme not in ("blob", "data", "chrome", "about")
                and urlsplit(u).netloc != own]


def screenshot_dir(default: Path) -> Path:
    """Where the panel screenshots go: $PERCHD_SCREENSHOTS, else the test's temporary directory."""
    folder = Path(os.environ.get("PERCHD_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder

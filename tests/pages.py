"""backtrace's HTML pages in tests: what a page holds (its tags, scripts and data) and the page
driven in headless Debian Chromium through selenium."""
from __future__ import annotations

import json
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest


class Page(HTMLParser):
    """The tags of a page, its script elements (type, text) and attributes that could fetch."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.scripts: list[tuple[str, str]] = []
        self.fetching: list[str] = []
        self._script: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "script":
            self._script = attrs.get("type") or "text/javascript"
            self.scripts.append((self._script, ""))
        self.fetching += [f"{tag} {k}={v}" for k, v in attrs.items() if k in ("src", "href")]

    def handle_endtag(self, tag):
        self._script = None

    def handle_data(self, data):
        if self._script is not None:
            kind, text = self.scripts[-1]
            self.scripts[-1] = (kind, text + data)


def page_data(text: str) -> dict:
    """The JSON blob an explorer page carries."""
    kind, blob = Page(text).scripts[0]
    assert kind == "application/json"
    return json.loads(blob)


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def browser(profile: Path, width: int = 1920, height: int = 1200):
    """A headless Chromium (skipped locally without it, a failure in CI) that keeps the page's
    console messages for `console_errors`."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium and chromium-driver for the browser tests "
                        "(.ci/run installs them as root)")
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def open_page(driver, page: Path, timeout: float = 20.0) -> None:
    """Load a backtrace page and wait until its first layout is drawn (body[data-ready])."""
    driver.get(page.as_uri())
    deadline = time.monotonic() + timeout
    while not driver.execute_script("return document.body && document.body.dataset.ready"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{page.name} was not ready after {timeout} s: "
                                 f"{console_errors(driver)}")
        time.sleep(0.05)


def console_errors(driver) -> list[str]:
    """The page's console errors and uncaught exceptions since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def artifacts(tmp_path_factory) -> Path:
    """Where screenshots go: $BACKTRACE_ARTIFACTS when set, else a folder under pytest's tmp."""
    where = os.environ.get("BACKTRACE_ARTIFACTS")
    folder = Path(where) / "explorer" if where else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

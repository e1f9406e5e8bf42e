"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so the browser test needs neither a
websocket client nor Playwright: Debian's `chromium` package and the standard library.

`load(path)` opens a local HTML file and returns what the page did: console errors and uncaught
exceptions, every request that left the file itself, each `.chart`'s size, and a PNG screenshot.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def executable() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class PageLoad:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL requested but the page's own
    charts: list[dict[str, Any]] = field(default_factory=list)  # id, width, height of each .chart
    screenshot: bytes = b""
    title: str = ""


class _Chromium:
    def __init__(self, exe: str, profile: str):
        to_r, self._w = os.pipe()
        self._r, from_w = os.pipe()
        # the child's fds 3 and 4 must be these pipe ends: park them above 10 first, then dup2 in the child
        hi_r, hi_w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.close(to_r)
        os.close(from_w)

        def child_fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(hi_r)
        os.close(hi_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer within the timeout")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


_CHARTS_JS = ("JSON.stringify([...document.querySelectorAll('.chart')].map(e => {"
              "const s = e.querySelector('svg, img') || e; const r = s.getBoundingClientRect();"
              "return {id: e.id, width: r.width, height: r.height}; }))")


def load(path: Path, exe: str, width: int = 1280, settle_s: float = 0.5) -> PageLoad:
    """Open `path` in headless Chromium and report console errors, requests, chart sizes and a full-page PNG."""
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-profile.") as profile:
        browser = _Chromium(exe, profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.send(f"{domain}.enable", session=s)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=s)
            browser.send("Page.navigate", {"url": url}, session=s)
            browser.wait_for("Page.loadEventFired")
            time.sleep(settle_s)
            charts = json.loads(browser.send("Runtime.evaluate", {"expression": _CHARTS_JS, "returnByValue": True},
                                              session=s)["result"]["value"])
            title = browser.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                                 session=s)["result"]["value"]
            shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=s)
        finally:
            browser.close()
    out = PageLoad(charts=charts, screenshot=base64.b64decode(shot["data"]), title=title)
    for e in browser.events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            out.console_errors.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.console_errors.append(p["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent" and p.get("request", {}).get("url") != url \
                and not p["request"]["url"].startswith("data:"):  # inline data is no request over a network
            out.requests.append(p["request"]["url"])
    return out

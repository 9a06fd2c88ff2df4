"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the
browser reads commands on fd 3 and writes replies and events on fd 4, NUL-separated JSON), standard
library only: no driver package and no browser download. The system's Chromium (Debian's ``chromium``)
is used; :func:`find_chromium` says where it is.

Every wait is bounded (``timeout``), and the browser's whole process group is killed on close."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: Names of the Chromium executable, in the order looked for on PATH.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The path of a Chromium on PATH (``$MOLEDIFF_CHROMIUM`` first), or None."""
    own = os.environ.get("MOLEDIFF_CHROMIUM")
    if own:
        return shutil.which(own)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; :meth:`call` sends a DevTools command to the page and
    returns its result, and every event received is kept in :attr:`events` (method, params)."""

    def __init__(self, executable: str, width: int = 1400, height: int = 1000, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.events: list[tuple[str, dict]] = []
        self._buffer = b""
        self._next_id = 0
        self._profile = tempfile.mkdtemp(prefix="molediff-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # the browser's fd 3 reads our commands, its fd 4 writes to us
            os.dup2(to_browser_r, 100)
            os.dup2(from_browser_w, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)
            os.close(100)
            os.close(101)
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        args = [executable, "--headless", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--disable-dev-shm-usage", "--mute-audio",
                f"--window-size={width},{height}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (containers, CI)
        self.process = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False, start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            targets = self._send("Target.getTargets")["targetInfos"]
            page = next((t for t in targets if t["type"] == "page"), None)
            target = page["targetId"] if page else self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ protocol

    def _send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float | None = None) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == message["id"], timeout or self.timeout, method)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _read_until(self, done, timeout: float, what: str) -> dict:
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append((message["method"], message.get("params", {})))
                if done(message):
                    return message
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from Chromium to {what} within {timeout:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe (waiting for {what}; exit code {self.process.poll()})")
                self._buffer += chunk

    def call(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """A DevTools command to the page."""
        return self._send(method, params, self.session, timeout)

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        """The params of the next ``method`` event (or one already received and not yet waited for)."""
        for k, (name, params) in enumerate(self.events):
            if name == method:
                del self.events[k]
                return params
        message = self._read_until(lambda m: m.get("method") == method, timeout or self.timeout, method)
        self.events.remove((method, message.get("params", {})))
        return message.get("params", {})

    # ------------------------------------------------------------------ page

    def open(self, path: Path, fragment: str = "") -> None:
        """Load a file (``fragment``: the part after ``#``) afresh and wait for its load event."""
        for url in ("about:blank", Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")):
            self.events.clear()
            self.call("Page.navigate", {"url": url})
            self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); a thrown error raises."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value (TimeoutError after ``timeout``)."""
        end = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"{expression!r} still false after {timeout:.0f} s")
            time.sleep(0.05)

    def screenshot(self, clip: dict | None = None) -> bytes:
        """A PNG of the page (``clip``: ``{x, y, width, height}`` in CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def console_errors(self) -> list[str]:
        """Errors the page reported: uncaught exceptions, console.error / console.assert and the browser's
        own error log entries (e.g. a resource that failed to load)."""
        out = []
        for name, params in self.events:
            if name == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif name == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif name == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
        return out

    def requests(self) -> list[str]:
        """URLs the page asked for (Network.requestWillBeSent), in order."""
        return [params["request"]["url"] for name, params in self.events if name == "Network.requestWillBeSent"]

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Kill the browser (its whole process group) and remove its profile."""
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

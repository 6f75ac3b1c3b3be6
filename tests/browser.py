"""Debian's Chromium, headless, driven over the DevTools protocol; and the poppler tools that read a PDF.

The browser tests need them and never skip: where one is missing, they fail and say how to install it
(.ci/run installs them with apt-get)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
]


def need(program: str, package: str) -> str:
    """The path of `program`, or a failed test saying which Debian package brings it."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(
            f"The browser tests need {program}, which is missing: apt-get install {package} "
            "(.ci/run installs it when missing).",
            pytrace=False,
        )
    return path


def chromium() -> str:
    return need("chromium", "chromium")


@dataclass
class Page:
    """One tab, with every event it has sent."""

    socket: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    async def read(self) -> None:
        async for message in self.socket:
            data = json.loads(message)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        await self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        data = await asyncio.wait_for(answer, 30)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        result: dict[str, Any] = data["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 20) -> Any:
        """The value of `expression` once it is truthy."""
        deadline = time.monotonic() + seconds
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {seconds} s: {expression}")
            await asyncio.sleep(0.1)

    async def navigate(self, url: str) -> None:
        loaded = len([e for e in self.events if e["method"] == "Page.loadEventFired"])
        await self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while len([e for e in self.events if e["method"] == "Page.loadEventFired"]) == loaded:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not load")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    def of(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.events if event["method"] == method]


@contextlib.asynccontextmanager
async def browser(profile: Path, *, width: int = 1400, height: int = 900) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own empty profile) with one tab, its network and console watched."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        f"--window-size={width},{height}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port := await asyncio.to_thread(_devtools_port, profile)):
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        (target,) = [t for t in targets if t["type"] == "page"]
        async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
            page = Page(socket)
            reader = asyncio.create_task(page.read())
            for domain in ("Page", "Network", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            try:
                yield page
            finally:
                reader.cancel()
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def _devtools_port(profile: Path) -> str | None:
    """The port Chromium's DevTools listen on, once it has written it into the profile."""
    port_file = profile / "DevToolsActivePort"
    text = port_file.read_text() if port_file.exists() else ""
    return text.split()[0] if text.strip() else None


async def run(*command: str) -> str:
    """Runs a program to the end and returns what it printed; a failure fails the test with its output."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode != 0:
        raise AssertionError(f"{command[0]} failed ({process.returncode}): {err.decode(errors='replace')}")
    return out.decode()


async def print_to_pdf(html: Path, pdf: Path, profile: Path) -> None:
    """What a browser's Print does with a page: headless Chromium's --print-to-pdf, no header or footer."""
    await run(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}",
        html.as_uri(),
    )

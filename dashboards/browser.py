"""Drive the served dashboard in Debian's headless Chromium: the browser test and the screenshots.

``python -m dashboards.browser docs/screenshots`` starts ``ctxsim dashboard`` on a free loopback
port and saves one full-page PNG per page.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a headless, sandbox-free Chromium (as root in a container) that calls no Google service.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Viewport height of the screenshots, in CSS pixels.
SCREENSHOT_HEIGHT = 2000
# URL path of each page (the first page is served at the root) and its screenshot name.
PAGES = {"": "design", "compare": "compare", "deploy": "deploy", "calibration": "calibration"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(port: int, timeout_s: float = 90.0) -> Iterator[str]:
    """Run ``ctxsim dashboard --port port`` until the block ends; yields its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "ctxsim.cli.main", "dashboard", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"ctxsim dashboard exited with code {server.returncode} before serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ctxsim dashboard did not serve {base} within {timeout_s:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def chromium(playwright) -> Iterator[object]:
    """Launch Debian's Chromium headless with a fresh profile folder; yields the browser."""
    with tempfile.TemporaryDirectory(prefix="ctxsim-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


def wait_for_page(page, timeout_ms: int = 60_000) -> None:
    """Wait until the page script has finished running and every chart is drawn."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_ms)
    page.wait_for_timeout(1500)


def _upload(page, label: str, path: Path) -> None:
    """Put ``path`` into the file uploader whose label contains ``label``, and wait for the rerun."""
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text=label)
    uploader.locator('input[type="file"]').set_input_files(str(path))
    page.wait_for_timeout(1000)
    wait_for_page(page)


def take_screenshots(out_dir: Path, profile: Path | None = None, cases: Path | None = None) -> list[Path]:
    """Save a PNG of every dashboard page into ``out_dir``; returns the paths.

    ``profile`` (a hardware profile YAML) and ``cases`` (``ctxsim validate --json`` output) are
    uploaded on the Calibration page before its screenshot, when given.
    """
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with serve(free_port()) as base, sync_playwright() as playwright, chromium(playwright) as context:
        page = context.new_page()
        for url_path, name in PAGES.items():
            page.goto(f"{base}/{url_path}")
            wait_for_page(page)
            if name == "calibration" and profile is not None:
                _upload(page, "hardware profile YAML", profile)
            if name == "calibration" and cases is not None:
                _upload(page, "validation cases", cases)
            path = out_dir / f"dashboard-{name}.png"
            # The main area scrolls inside the app, so a tall viewport is what captures the charts.
            page.set_viewport_size({"width": 1400, "height": SCREENSHOT_HEIGHT})
            wait_for_page(page)
            page.screenshot(path=str(path))
            log.info("saved %s", path)
            saved.append(path)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Save a screenshot of each dashboard page.")
    parser.add_argument("out_dir", type=Path, help="Folder for the PNG files, such as docs/screenshots.")
    parser.add_argument("--profile", type=Path, help="Hardware profile YAML to load on the Calibration page.")
    parser.add_argument("--cases", type=Path, help="'ctxsim validate --json' output to load on the Calibration page.")
    args = parser.parse_args(argv)
    for path in (args.profile, args.cases):
        if path is not None and not path.is_file():
            sys.stderr.write(f"error: {path} not found; check the path\n")
            return 1
    if not CHROMIUM.exists():
        sys.stderr.write(f"error: {CHROMIUM} not found; install it with 'apt-get install chromium'\n")
        return 1
    for path in take_screenshots(args.out_dir, args.profile, args.cases):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

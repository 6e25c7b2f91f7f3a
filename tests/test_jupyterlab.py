"""The widget explorers in a real JupyterLab, as a user meets them: a project notebook opened with its kernel (no
"Select Kernel" dialog), run, a slider moved, the picture redrawn. Playwright (from PyPI) drives Debian's Chromium
through `executable_path` (its own browser download needs the internet); without either, the test is skipped
locally and fails in CI (CI=1)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the dev extra brings it
    sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
NOTEBOOK = ROOT / "nbs" / "data" / "06_viz.ipynb"  # `browse`: a galaxy slider, band buttons, marks on and off


def need(what: str, ok: bool):
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed")
    pytest.skip(f"{what} not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on a copy of the notebook (so nothing it saves lands in the repository): (url, token)."
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    port, token = free_port(), "clumpnb-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    env.pop("JUPYTER_PATH", None)
    env.pop("MPLBACKEND", None)  # the tests' Agg (conftest): a user's kernel draws with the inline backend
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start in 60 s")
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_explorer_slider_redraws_in_jupyterlab(lab, tmp_path):
    need("chromium", CHROMIUM is not None)
    need("playwright", sync_playwright is not None)
    url, token = lab
    shots = tmp_path
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        status = page.locator("#jp-main-statusbar")
        status.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the notebook's own kernel, ready
        assert page.locator(".jp-Dialog").count() == 0, "a dialog opened with the notebook (no kernel?)"
        page.get_by_role("menuitem", name="Run").click()
        page.get_by_text("Run All Cells", exact=True).click()
        slider = page.locator(".widget-slider .noUi-handle").first
        try:
            slider.wait_for(timeout=180_000)
        except Exception:
            page.screenshot(path=str(shots / "no_slider.png"))  # what the page showed, for the failure's reader
            raise
        picture = page.locator(".widget-output img").first
        picture.wait_for(timeout=60_000)
        before = picture.get_attribute("src")
        slider.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("(before) => { const im = document.querySelector('.widget-output img');"
                               " return im && im.src !== before; }", arg=before, timeout=60_000)
        assert page.locator(".widget-output img").first.get_attribute("src") != before
        assert page.locator(".jp-Dialog").count() == 0
        browser.close()

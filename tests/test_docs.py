"""The documentation site: built from the notebooks offline, grouped by chapter in reading order, its formulas typeset
by a MathJax copy inside the site, and its pages rendered by headless Chromium.
Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); without it the rendering tests are
skipped locally and fail in CI (CI=1)."""
import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
READING_ORDER = ["Home", "Foundations", "Data", "Detector", "Backbone comparison", "Blind spots",
                 "Command line and tools"]
FOLDER_CHAPTERS = {"data": "Data", "detector": "Detector", "comparison": "Backbone comparison",
                   "blindspots": "Blind spots"}
FORMULA_PAGE = "01_survey"  # a chapter with a formula that builds in seconds
MATHJAX_URL = re.compile(r"https?://[^\"'\s]*mathjax", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "clumpnb.cli", "docs", "--nbs", str(ROOT / "nbs"), "--out", str(out),
           "--only", "index", FORMULA_PAGE]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def need_chromium():
    if CHROMIUM:
        return
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium not installed")


def dump_dom(path, tmp_path, *flags):
    "The page's DOM after its scripts ran (MathJax included), as headless Chromium dumps it."
    user = "--user-data-dir=" + str(tmp_path / "profile")
    r = subprocess.run([CHROMIUM, *FLAGS, user, *flags, "--virtual-time-budget=10000", "--dump-dom", path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    return r.stdout


def chapters(page_html):
    "The sidebar as [(chapter heading, [linked pages])], in the order it shows them."
    nav = re.search(r"<nav class=\"clumpnb-nav\">(.*?)</nav>", page_html, re.S)
    assert nav, "no sidebar"
    parts = re.split(r"<h2 class=\"chapter\">(.*?)</h2>", nav.group(1))[1:]
    return [(title, re.findall(r"<a [^>]*href=\"([^\"]+)\"", links)) for title, links in zip(parts[::2], parts[1::2])]


def test_site_has_home_page(site):
    html = (site / "index.html").read_text()
    assert "<title>clumpnb - clumpnb</title>" in html
    assert re.search(r"<img[^>]+src=\"data:image/png;base64,", html)  # the galaxy figure
    assert "01_survey.html" in html  # the sidebar links the chapters


def test_sidebar_lists_chapters_in_reading_order(site):
    side = chapters((site / "index.html").read_text())
    assert [t for t, _ in side] == READING_ORDER
    pages = dict(side)
    assert pages["Home"] == ["index.html"] and pages["Foundations"][0] == "00_core.html"
    for title, links in side:  # pages within a chapter in numeric order
        assert links == sorted(links) or title == "Home", (title, links)
    for folder, title in FOLDER_CHAPTERS.items():  # a chapter is its folder, whole
        stems = {p.stem for p in (ROOT / "nbs" / folder).glob("*.ipynb") if not p.name.startswith("_")}
        assert {h[:-len(".html")] for h in pages[title]} == stems, title
    nets = {p.stem + ".html" for p in (ROOT / "nbs" / "nets").glob("[0-9]*.ipynb")}
    assert nets <= set(pages["Foundations"])  # the shared network layer is part of the foundations
    tools = pages["Command line and tools"]
    assert all(h[:1] == "9" for h in tools) and "99_cli.html" in tools
    every = [h for _, links in side for h in links]
    assert len(every) == len(set(every))


def test_formulas_use_the_sites_own_mathjax(site):
    assert (site / "mathjax" / "MathJax.js").exists()
    size = sum(f.stat().st_size for f in (site / "mathjax").rglob("*") if f.is_file())
    assert size < 4e6, size  # only what the pages load, not the whole package
    for page in site.glob("*.html"):
        html = page.read_text()
        assert "<script src=\"mathjax/MathJax.js?config=" in html, page.name
        assert not MATHJAX_URL.search(html), (page.name, MATHJAX_URL.search(html).group())


def test_home_page_renders_in_chromium(site, tmp_path):
    need_chromium()
    user = ["--user-data-dir=" + str(tmp_path / "profile")]
    url = (site / "index.html").as_uri()
    dom = dump_dom(site / "index.html", tmp_path)
    assert "<title>clumpnb - clumpnb</title>" in dom
    # the galaxy figure is in the rendered page
    assert re.search(r"<img[^>]+src=\"data:image/png;base64,", dom), dom.count("<img")
    assert [t for t, _ in chapters(dom)] == READING_ORDER  # the sidebar as a reader sees it
    shot = tmp_path / "home.png"
    subprocess.run([CHROMIUM, *FLAGS, *user, "--window-size=1280,2400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB"), float)
    assert img.shape[:2] == (2400, 1280) and img.std() > 10  # a page with content, not a blank screen
    # the simulated galaxies are dark images on the white page: a large, dark block of pixels must exist
    assert (img.mean(-1) < 40).mean() > 0.02


def test_formula_renders_in_chromium(site, tmp_path):
    need_chromium()
    src = next((ROOT / "nbs").rglob(FORMULA_PAGE + ".ipynb"))
    cells = nbformat.read(src, as_version=4).cells
    maths = [c.source for c in cells if c.cell_type == "markdown" and re.search(r"\$[^$\n]+\$", c.source)]
    assert maths, f"{src.name} has no formula any more: point FORMULA_PAGE at a notebook that has one"
    dom = dump_dom(site / (FORMULA_PAGE + ".html"), tmp_path)
    typeset = dom.count("class=\"MathJax\"")  # MathJax's HTML-CSS output, one span per formula
    assert typeset >= 1 and typeset == len(re.findall(r"<script type=\"math/tex", dom)), typeset
    assert "class=\"noError\"" not in dom and "Math Processing Error" not in dom
    assert not MATHJAX_URL.search(dom)


def test_long_code_lines_scroll_inside_their_cell(tmp_path):
    need_chromium()
    from clumpnb.docs import build_docs
    long = "x = " + " + ".join(str(i) for i in range(300))
    cell = nbformat.v4.new_code_cell(long)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Long lines"), cell])
    nbformat.write(nb, tmp_path / "index.ipynb")
    (page,) = build_docs(tmp_path, tmp_path / "site", execute=False, progress=False)
    # measured in the browser: the page is no wider than the window, and each code block wider than its cell scrolls
    probe = """<script>window.addEventListener("load", () => {
      const pres = [...document.querySelectorAll("main pre")].filter(p => p.scrollWidth > p.clientWidth);
      const fixed = pres.filter(p => !["auto", "scroll"].includes(getComputedStyle(p).overflowX));
      document.body.dataset.probe = JSON.stringify({page: document.documentElement.scrollWidth, window: innerWidth,
                                                    wide: pres.length, fixed: fixed.length});
    });</script>"""
    page.write_text(page.read_text().replace("</body>", probe + "</body>"))
    dom = dump_dom(page, tmp_path, "--window-size=1000,800")
    m = re.search(r"data-probe=\"([^\"]+)\"", dom)
    assert m, "the probe did not run"
    r = json.loads(m.group(1).replace("&quot;", "\""))
    assert r["page"] <= r["window"] and r["wide"] >= 1 and r["fixed"] == 0, r


def test_missing_mathjax_package_is_a_clear_error(tmp_path):
    shadow = tmp_path / "jupyter_server_mathjax"  # the package, without its MathJax files
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    path = [str(tmp_path)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, "-m", "clumpnb.cli", "docs", "--nbs", str(ROOT / "nbs"), "--out", str(tmp_path / "site"),
           "--only", "index"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr
    assert "pip install jupyter-server-mathjax" in r.stderr and "Traceback" not in r.stderr, r.stderr

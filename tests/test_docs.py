"""The documentation site: built from the notebooks offline, grouped by chapter in reading order, its formulas typeset
by a MathJax copy inside the site, an API entry for every exported name, searchable, and its pages rendered by headless
Chromium. Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); without it the rendering tests are
skipped locally and fail in CI (CI=1)."""
import ast
import html
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
# pages with many exported names, built without running them: the API entries need no run
API_PAGES = {"30_lst": "clumpnb.blindspots.lst", "14_detect": "clumpnb.detector.detect",
             "12_evaluate": "clumpnb.detector.evaluate", "92_docs": "clumpnb.docs"}
# what makes a browser fetch: a script, a stylesheet, an image or a frame from elsewhere, or a CSS url()
FETCH = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=[\"']?(?:https?:)?//|url\(\s*[\"']?(?:https?:)?//",
                   re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "clumpnb.cli", "docs", "--nbs", str(ROOT / "nbs"), "--out", str(out),
           "--only", "index", FORMULA_PAGE]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def api_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    cmd = [sys.executable, "-m", "clumpnb.cli", "docs", "--nbs", str(ROOT / "nbs"), "--out", str(out),
           "--no-execute", "--only", *API_PAGES]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def need_chromium():
    if CHROMIUM:
        return
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium not installed")


def dump_dom(path, tmp_path, *flags, query=""):
    "The page's DOM after its scripts ran (MathJax included), as headless Chromium dumps it."
    user = "--user-data-dir=" + str(tmp_path / "profile")
    url = path.as_uri() + query
    r = subprocess.run([CHROMIUM, *FLAGS, user, *flags, "--virtual-time-budget=10000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    return r.stdout


def chapters(page_html):
    "The sidebar as [(chapter heading, [linked pages])], in the order it shows them."
    nav = re.search(r"<nav class=\"clumpnb-nav\">(.*?)</nav>", page_html, re.S)
    assert nav, "no sidebar"
    parts = re.split(r"<h2 class=\"chapter\">(.*?)</h2>", nav.group(1))[1:]
    return [(title, re.findall(r"<a [^>]*href=\"([^\"]+)\"", links)) for title, links in zip(parts[::2], parts[1::2])]


def test_site_has_home_page(site):
    page = (site / "index.html").read_text()
    assert "<title>clumpnb: Find giant star-forming clumps" in page  # not "clumpnb - clumpnb"
    assert "<title>The survey model - clumpnb</title>" in (site / "01_survey.html").read_text()
    assert re.search(r"<img[^>]+src=\"data:image/png;base64,", page)  # the galaxy figure
    assert "01_survey.html" in page  # the sidebar links the chapters


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
        text = page.read_text()
        assert "<script src=\"mathjax/MathJax.js?config=" in text, page.name
        assert not MATHJAX_URL.search(text), (page.name, MATHJAX_URL.search(text).group())


def test_home_page_renders_in_chromium(site, tmp_path):
    need_chromium()
    user = ["--user-data-dir=" + str(tmp_path / "profile")]
    url = (site / "index.html").as_uri()
    dom = dump_dom(site / "index.html", tmp_path)
    assert "<title>clumpnb: Find giant star-forming clumps" in dom
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


def exported_names(stem):
    "The public functions and classes that the export cells of notebook `stem` define, as nbdev documents them."
    src = next((ROOT / "nbs").rglob(stem + ".ipynb"))
    names = []
    for c in nbformat.read(src, as_version=4).cells:
        if c.cell_type == "code" and re.match(r"#\|\s*exports?\b", c.source):
            body = ast.parse(c.source).body
            names += [n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name[0] != "_"]
    return names


def entry(page, name):
    "The HTML of `name`'s entry on `page`: from its heading to the next heading of its level or above."
    m = re.search(rf"<h3 class=\"clumpnb-api\" id=\"{re.escape(name.lower())}\">(.*?)(?=<h[123][ >]|<footer)", page,
                  re.S)
    return m and m.group(0)


def test_every_exported_name_has_an_entry(api_site):
    for stem, module in API_PAGES.items():
        page, mod = (api_site / f"{stem}.html").read_text(), importlib.import_module(module)
        names = exported_names(stem)
        assert len(names) >= 4, (stem, names)
        for name in names:
            e = entry(page, name)
            assert e, f"{stem}: no entry for {name}"
            obj = getattr(mod, name)
            assert f"<code>{name}</code>" in e and re.search(rf"\b{name}\(", html.unescape(re.sub(r"<[^>]+>", "", e)))
            params = [p for p in inspect.signature(obj).parameters if p != "self"]
            if params:  # the parameter table: a row per parameter
                table = re.search(r"<table>.*?</table>", e, re.S)
                assert table, f"{stem}: {name} has no parameter table"
                rows = re.findall(r"<tr>\s*<td>([^<]+)</td>", table.group(0))
                assert rows == params, (name, rows, params)
            # the source link: nbdev's, on the line where the definition starts (decorators included)
            path, line = re.search(r"class=\"clumpnb-src\" href=\"https://github\.com/[^\"]+?/blob/\w+/([^\"]+)#L(\d+)\"",
                                   e).groups()
            assert ROOT / path == Path(inspect.getsourcefile(mod)), (name, path)
            first = (ROOT / path).read_text().splitlines()[int(line) - 1]
            assert first.startswith(("@", f"def {name}", f"class {name}")), (name, line, first)


def test_exported_source_is_hidden(api_site):
    for stem in API_PAGES:
        page = (api_site / f"{stem}.html").read_text()
        assert not re.search(r"(In|Out)&nbsp;\[[\d&nbsp;]*\]:", page), stem  # no prompts
        inputs = "".join(re.findall(r"<div class=\"cm-editor cm-s-jupyter\">(.*?)</div>\s*</div>", page, re.S))
        code = html.unescape(re.sub(r"<[^>]+>", "", inputs))
        shown = [n for n in exported_names(stem) if re.search(rf"^(def|class) {n}\b", code, re.M)]
        assert not shown, (stem, shown)
        assert not re.search(r"^#\|\s*(export|default_exp)", code, re.M), stem


def test_prose_links_to_entries(api_site):
    "`name` in prose links to its entry, on its own page and across pages, and every such link lands on an anchor."
    pages = {p.name: p.read_text() for p in api_site.glob("*.html")}
    ids = {name: set(re.findall(r"\bid=\"([^\"]+)\"", text)) for name, text in pages.items()}
    links = [(src, m[0], m[1]) for src, text in pages.items()
             for m in re.findall(r"<a href=\"([\w-]+\.html)#([^\"]+)\"><code>", text)]
    assert len(links) > 20, links
    assert any(t == "30_lst.html" and a == "level_set_traversal" for _, t, a in links)
    assert any(s != t and t in pages for s, t, _ in links), "no link across pages"
    broken = [(s, t, a) for s, t, a in links if t in ids and a not in ids[t]]
    assert not broken, broken[:10]


def test_no_request_leaves_the_site(site, api_site):
    for page in [*site.glob("*.html"), *api_site.glob("*.html")]:
        text = page.read_text()
        assert not FETCH.search(text), (page.name, FETCH.search(text).group())
        assert not re.search(r"<script[^>]+application/vnd\.jupyter\.widget|embed-amd\.js|require\.min\.js", text), page.name
    assert (site / "search.js").exists() and not FETCH.search((site / "search.js").read_text())


def test_no_temporary_path(site, api_site):
    for page in [*site.glob("*.html"), *api_site.glob("*.html")]:
        text = page.read_text()
        for leak in {tempfile.gettempdir() + "/", "/tmp/", str(site), str(api_site)}:
            assert leak not in text, (page.name, leak)


def search_index(site):
    js = (site / "search.js").read_text()
    assert js.startswith("window.clumpnbIndex = ")
    return json.loads(js.removeprefix("window.clumpnbIndex = ").rstrip().rstrip(";"))


def test_search_index_holds_the_entries(api_site):
    index = search_index(api_site)
    urls = {e["t"]: e["u"] for e in index}
    assert urls["detect"] == "14_detect.html#detect" and urls["level_set_traversal"] == "30_lst.html#level_set_traversal"
    assert all(e["p"] and e["u"].split("#")[0] in {f"{s}.html" for s in API_PAGES} for e in index)


def test_search_finds_names_in_chromium(api_site, tmp_path):
    need_chromium()
    for query, hit in [("level_set_traversal", "30_lst.html#level_set_traversal"), ("detect", "14_detect.html#detect")]:
        dom = dump_dom(api_site / "92_docs.html", tmp_path, query=f"?q={query}")
        hits = re.search(r"<ol id=\"clumpnb-hits\">(.*?)</ol>", dom, re.S)
        assert hits, "no search results list"
        found = re.findall(r"<a href=\"([^\"]+)\">", hits.group(1))
        assert found and found[0] == hit, (query, found)


def test_page_layout_in_chromium(api_site, tmp_path):
    "Contents and previous/next links on the page; the sidebar folds its chapters on a narrow screen."
    need_chromium()
    page = api_site / "30_lst.html"
    text = page.read_text()
    assert re.search(r"<nav class=\"clumpnb-toc\"><h2>On this page</h2><ul>.*href=\"#level_set_traversal\"", text)
    assert re.search(r"<footer class=\"clumpnb-pager\"><a href=\"[\w-]+\.html\" rel=\"prev\">.*rel=\"next\"", text)
    probe = """<script>window.addEventListener("load", () => {
      const shown = s => getComputedStyle(document.querySelector(s)).display !== "none";
      const nav = document.querySelector("nav.clumpnb-nav").getBoundingClientRect();
      document.body.dataset.probe = JSON.stringify({chapters: shown("nav.clumpnb-nav .chapters"),
        menu: shown("label[for=clumpnb-menu]"), navWidth: nav.width, width: innerWidth});
    });</script>"""
    page.write_text(text.replace("</body>", probe + "</body>"))
    seen = {}
    for width in (1280, 600):
        dom = dump_dom(page, tmp_path, f"--window-size={width},900")
        m = re.search(r"data-probe=\"([^\"]+)\"", dom)
        assert m, "the probe did not run"
        seen[width] = json.loads(html.unescape(m.group(1)))
    assert seen[1280]["chapters"] and not seen[1280]["menu"] and seen[1280]["navWidth"] < 300, seen
    assert not seen[600]["chapters"] and seen[600]["menu"] and seen[600]["navWidth"] > 0.8 * seen[600]["width"], seen


def test_outputs_as_the_site_shows_them(tmp_path):
    "Generated prose shown once, no warnings or test-cell leftovers, a widget as a picture, imports hidden."
    from clumpnb.docs import build_docs
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    cells = [
        md("# Outputs"),
        code("import sys, tempfile\nimport ipywidgets as W\nimport matplotlib.pyplot as plt\nfrom IPython.display import Markdown"),
        code('print("a warning in", tempfile.mkdtemp(), file=sys.stderr)\nMarkdown(f"The answer is **{6 * 7}**.")'),
        code("fig, ax = plt.subplots()\nplt.show()  # test_fail: a check's blank axes"),
        code("out = W.Output()\nwith out:\n    plt.plot([1, 2]); plt.show()\nW.VBox([W.IntSlider(), out])"),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "index.ipynb")
    (page,) = build_docs(tmp_path, tmp_path / "site", progress=False)
    text = page.read_text()
    assert "The answer is <strong>42</strong>." in text and "Markdown(" not in text  # prose once, its code hidden
    assert "data-mime-type=\"application/vnd.jupyter.stderr\"" not in text  # no warning box
    assert tempfile.gettempdir() not in text  # nor its build path
    assert "import ipywidgets" not in text  # a cell that only imports
    assert "test_fail" in text  # the check's code is shown, without its blank axes...
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", text)) == 1  # ...so the one picture is the widget's
    assert "application/vnd.jupyter.widget" not in text and "VBox(children" not in text  # no widget view or repr


def test_cache_and_jobs(tmp_path, capsys):
    "A rebuild runs only the notebook that changed; two processes build the pages."
    from clumpnb.docs import build_docs
    for name, title in [("index", "Home"), ("01_survey", "Survey")]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}"),
                                             nbformat.v4.new_code_cell("import os\nos.getpid()")])
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    site = tmp_path.parent / (tmp_path.name + "-site")  # outside the notebook folder
    pids = []
    for change in (False, False, True):
        if change:
            nb = nbformat.read(tmp_path / "01_survey.ipynb", as_version=4)
            nb.cells[0].source += "\n\nOne more sentence."
            nbformat.write(nb, tmp_path / "01_survey.ipynb")
        pages = build_docs(tmp_path, site, jobs=2)
        assert [p.name for p in pages] == ["index.html", "01_survey.html"]
        said = capsys.readouterr().out
        assert re.search(r"built 2 pages in [\d.]+ s", said), said
        pids.append([re.search(r"<pre>(\d+)</pre>", p.read_text()).group(1) for p in pages])
        assert f"({[2, 0, 1][len(pids) - 1]} notebooks run" in said, said
    assert pids[1] == pids[0] and pids[2][0] == pids[0][0] and pids[2][1] != pids[0][1]  # kept runs, and one new

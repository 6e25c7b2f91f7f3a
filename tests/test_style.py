"""The style floor of the exported module: ruff's pycodestyle and pyflakes rules (one statement per line, 120
columns), functions of readable length with few parameters, modules of one idea, small command handlers, no private
name imported across modules, and an import graph whose arrows point down the layers (no cycle, no chapter importing
another chapter). The checks read the module as nbdev exports it from the notebooks."""
import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

LIB = ROOT / "clumpnb"
MODULES = sorted(p for p in LIB.rglob("*.py") if p.name != "_modidx.py")
MAX_FUNCTION_LINES = 60
MAX_HANDLER_LINES = 15
# A function that needs more settings than this takes a config dataclass (LSTConfig, TrainConfig, ...) instead.
# Counted: every named parameter but `self`/`cls`; `*args`/`**kwargs` are not counted.
MAX_PARAMETERS = 8
# A module holds one idea; the generated index and the command line (one small handler per command) are exempt.
MAX_MODULE_LINES = 450
LONG_MODULES_ALLOWED = {"cli.py", "docs.py"}  # the command table; the site builder (template, CSS, search)
# The layers, lowest first: a module imports only from a lower layer or from its own folder. The two chapters that
# build on the detector (the backbone comparison and the blind-spot geometry) sit side by side and never import
# each other; what both need lives below them.
LAYERS = [{"core"}, {"data"}, {"nets"}, {"detector"}, {"comparison", "blindspots"},
          {"report", "docs", "protocol", "demo_figures"}, {"demo", "confirm", "bench", "headline"}, {"cli"}]
# Folders whose functions must not import the package: a clumpnb import inside a function hides an arrow of the
# graph, or a cycle. The command modules above the chapters may defer imports for the command line's start-up time.
NO_DEFERRED_IMPORTS = {"data", "nets", "detector", "comparison", "blindspots"}


def generated_all_line(path, row: int) -> bool:
    "nbdev 2.4 wraps `__all__` at 120 columns and then writes `__all__ = ` in front of the first line."
    return path.read_text().splitlines()[row - 1].startswith("__all__ = ")


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    r = subprocess.run([ruff, "check", str(LIB), "--output-format", "json"], capture_output=True, text=True, cwd=ROOT)
    errs = [e for e in json.loads(r.stdout or "[]")
            if not (e["code"] == "E501" and generated_all_line(ROOT / e["filename"], e["location"]["row"]))]
    msgs = [f"{e['filename']}:{e['location']['row']}: {e['code']} {e['message']}" for e in errs]
    assert not msgs, "\n".join(msgs[:40])


def functions(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_functions_are_short():
    long = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p in MODULES for f in functions(p) if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_cli_handlers_are_small():
    cli = LIB / "cli.py"
    # a handler takes the parsed arguments `args` and nothing else (argparse's set_defaults(func=...))
    handlers = [f for f in functions(cli) if [x.arg for x in f.args.args] == ["args"]]
    assert len(handlers) >= 10, [f.name for f in handlers]
    big = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in handlers
           if f.end_lineno - f.lineno + 1 > MAX_HANDLER_LINES]
    assert not big, big


def test_no_private_name_crosses_a_module():
    bad = []
    for p in MODULES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("clumpnb")):
                bad += [f"{p.relative_to(ROOT)}: {a.name}" for a in node.names if re.match(r"_[a-z]", a.name)]
    assert not bad, bad


def n_parameters(f) -> int:
    a = f.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def test_functions_take_few_parameters():
    many = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name} ({n_parameters(f)} parameters)"
            for p in MODULES for f in functions(p) if n_parameters(f) > MAX_PARAMETERS]
    assert not many, "\n".join(many)


def test_modules_hold_one_idea():
    long = [f"{p.relative_to(ROOT)} ({len(p.read_text().splitlines())} lines)" for p in MODULES
            if p.name not in LONG_MODULES_ALLOWED and len(p.read_text().splitlines()) > MAX_MODULE_LINES]
    assert not long, "\n".join(long)


def module_name(p) -> str:
    return ".".join(p.relative_to(ROOT).with_suffix("").parts)


def imported_modules(p):
    "Every clumpnb module `p` imports, at the top or inside a function, as (dotted name, inside a function)."
    name = module_name(p)
    package = name.rsplit(".", 1)[0] if p.name != "__init__.py" else name
    tree = ast.parse(p.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t == "clumpnb" or t.startswith("clumpnb."):
                yield resolve(t), id(node) in inner


def resolve(dotted: str) -> str:
    "The module a dotted name refers to: itself if it is a module, else the module that defines it."
    parts = dotted.split(".")
    while parts:
        path = ROOT.joinpath(*parts)
        if path.with_suffix(".py").exists() or (path / "__init__.py").exists():
            return ".".join(parts)
        parts = parts[:-1]
    return dotted


def graph():
    return {module_name(p): {m for m, _ in imported_modules(p) if m != module_name(p)} for p in MODULES}


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    if key == "__init__":
        return -1
    return next(i for i, names in enumerate(LAYERS) if key in names)


def test_layers_are_known():
    unknown = []
    for m in graph():
        try:
            layer(m)
        except StopIteration:
            unknown.append(m)
    assert not unknown, f"place these modules in a layer of LAYERS: {unknown}"


def test_imports_point_down():
    up = []
    for m, targets in graph().items():
        for t in targets:
            same_folder = t.rsplit(".", 1)[0] == m.rsplit(".", 1)[0] and m.count(".") == 2
            if t == "clumpnb" or same_folder:
                continue
            if layer(t) >= layer(m):
                up.append(f"{m} imports {t}")
    assert not up, "\n".join(up)


def test_no_import_cycle():
    g = graph()
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(g.get(m, ())):
            visit(t)
        stack.pop()

    for m in sorted(g):
        visit(m)
    assert not cycles, "\n".join(cycles)


def test_no_deferred_package_imports_in_the_chapters():
    hidden = [f"{module_name(p)} imports {m} inside a function" for p in MODULES
              if p.relative_to(LIB).parts[0] in NO_DEFERRED_IMPORTS
              for m, inner in imported_modules(p) if inner]
    assert not hidden, "\n".join(hidden)


def test_the_graph_checks_can_fail(tmp_path):
    "The cycle and layer checks catch what they are for: a toy cycle, and an arrow pointing up."
    g = {"a": {"b"}, "b": {"a"}}
    found = []

    def visit(m, stack):
        if m in stack:
            found.append(m)
            return
        for t in g[m]:
            visit(t, stack + [m])

    visit("a", [])
    assert found
    assert layer("clumpnb.data.simulate") < layer("clumpnb.detector.detect") < layer("clumpnb.blindspots.lst")
    assert layer("clumpnb.comparison.compare") == layer("clumpnb.blindspots.galaxy")


def notebook_of(module: str):
    "The notebook a module is exported from, read from the line nbdev writes at its top."
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    m = re.search(r"File to edit: (\S+\.ipynb)", path.read_text()) if path.exists() else None
    return Path(m.group(1)).name if m else None


def reading_order(notebook: str) -> tuple:
    "`13c_catalog.ipynb` -> (13, 'c'): the number, then the letter suffix that inserts a chapter without renumbering."
    m = re.match(r"(\d+)([a-z]?)_", notebook)
    return (int(m.group(1)), m.group(2))


def test_notebooks_import_only_earlier_notebooks():
    "A chapter builds only on the chapters before it, so the book reads in its order."
    late = []
    for m, targets in graph().items():
        here = notebook_of(m)
        for t in targets:
            there = notebook_of(t)
            if here and there and reading_order(there) >= reading_order(here):
                late.append(f"{here} ({m}) imports {there} ({t})")
    assert not late, "\n".join(late)
    assert reading_order("13c_catalog.ipynb") < reading_order("14_detect.ipynb") < reading_order("14a_x.ipynb")

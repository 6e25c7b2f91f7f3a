"""The style floor of the exported module (STYLE.md of the project, issue: one statement per line, 120 columns):
ruff's pycodestyle and pyflakes rules, functions of readable length, small command handlers, and no private name
imported across modules. The checks read the module as nbdev exports it from the notebooks."""
import ast
import json
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

LIB = ROOT / "clumpnb"
MODULES = sorted(p for p in LIB.rglob("*.py") if p.name != "_modidx.py")
MAX_FUNCTION_LINES = 60
MAX_HANDLER_LINES = 15


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
    # a handler takes the parsed arguments `a` and nothing else (argparse's set_defaults(func=...))
    handlers = [f for f in functions(cli) if [x.arg for x in f.args.args] == ["a"]]
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

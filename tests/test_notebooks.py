"""Every notebook in nbs/ is a test: its cells run top to bottom, skipping cells flagged with settings.ini's
tst_flags (slow, cuda) exactly as `nbdev_test` does."""
from configparser import ConfigParser

import pytest
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it

from conftest import ROOT

cfg = ConfigParser(); cfg.read(ROOT / "settings.ini")
SKIP = cfg["DEFAULT"]["tst_flags"].split()  # space-separated, as nbdev_test reads it
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_"))


def test_found_notebooks():
    assert len(NOTEBOOKS) >= 10, NOTEBOOKS


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(ROOT / "nbs")) for p in NOTEBOOKS])
def test_notebook(nb):
    ok, seconds = run_notebook(nb, skip_flags=SKIP, basepath=ROOT)
    assert ok, f"{nb.name} failed (traceback above)"


def test_notebooks_open_with_their_kernel():
    "Each notebook names its kernel, so JupyterLab opens it without asking (nbdev_clean keeps `kernelspec`)."
    import json

    missing = [str(p.relative_to(ROOT)) for p in NOTEBOOKS
               if json.loads(p.read_text()).get("metadata", {}).get("kernelspec", {}).get("name") != "python3"]
    assert not missing, f"notebooks without a python3 kernelspec: {missing}"

"""The package's shape: stage order, no cycles, public names that exist, light imports, docs that resolve.

Modelled on scanpy's ``tests/test_package_structure.py``. The import rules themselves live in
``capscale._structure`` (``python -m capscale._structure`` prints the stage graph).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import capscale
from capscale import _structure

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "capscale"


def _modules() -> list[str]:
    out = []
    for m in pkgutil.walk_packages(capscale.__path__, "capscale."):
        if ".task_configs" in m.name or ".synthetic.family" in m.name:
            continue
        out.append(m.name)
    return sorted(out)


def test_stages_import_only_earlier_stages_and_there_is_no_cycle():
    report = _structure.check()
    assert report.ok, report.format()
    # the check sees the whole package and real edges
    assert len(report.modules) >= 40
    assert report.stage_edges.get(("pipelines", "analysis"), 0) > 0


def test_the_structure_check_catches_a_backward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "capscale"
    for sub in ("data", "analysis"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from capscale.analysis import b\n")
    (pkg / "analysis" / "b.py").write_text("def f():\n    from capscale.data import a\n    import matplotlib\n")
    report = _structure.check(pkg)
    kinds = sorted(v.kind for v in report.violations)
    assert kinds == ["backward", "cycle", "forbidden"], report.format()
    assert "capscale.data.a (data) imports capscale.analysis.b (analysis)" in report.format()


def test_structure_command_exits_zero_and_prints_the_graph():
    res = subprocess.run([sys.executable, "-m", "capscale._structure"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pipelines -> analysis" in res.stdout


@pytest.mark.parametrize("name", _modules())
def test_every_name_in_all_exists(name):
    mod = importlib.import_module(name)
    missing = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ lists names that do not exist: {missing}"


def test_every_stage_package_declares_its_public_names():
    for sub in ("data", "eval", "analysis", "plotting", "pipelines", "synthetic"):
        mod = importlib.import_module(f"capscale.{sub}")
        assert getattr(mod, "__all__", None), f"capscale.{sub} has no __all__"
        assert mod.__doc__ and len(mod.__doc__) > 80, f"capscale.{sub} has no module docstring"


def test_imports_stay_light():
    """``import capscale`` and the stage packages load no torch; analysis loads no matplotlib."""
    code = ("import sys, importlib, pkgutil\n"
            "import capscale, capscale.data, capscale.eval, capscale.analysis, capscale.pipelines\n"
            "assert 'torch' not in sys.modules, 'torch imported by a stage package'\n"
            "import capscale.analysis as a\n"
            "for m in pkgutil.walk_packages(a.__path__, 'capscale.analysis.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in ('matplotlib', 'torch') if m in sys.modules]\n"
            "assert not bad, f'analysis imported {bad}'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr


def test_docs_the_code_cites_are_in_the_repository():
    cited: set[str] = set()
    for p in [*PKG.rglob("*.py"), REPO / "README.md"]:
        if "task_configs" in p.parts:
            continue
        cited |= set(re.findall(r"docs/([\w-]+\.md)", p.read_text(encoding="utf-8")))
    assert cited, "no docs/*.md references found: the pattern is stale"
    missing = sorted(c for c in cited if not (REPO / "docs" / c).is_file())
    assert not missing, f"cited but not in docs/: {missing}"
    for p in PKG.rglob("*.py"):
        assert "../shared" not in p.read_text(encoding="utf-8") or p.name == "conftest.py", (
            f"{p.relative_to(REPO)} refers to files outside the repository (../shared)")

"""A wheel built from the repository works without the source tree.

Builds the wheel (``pip wheel``), installs it into a fresh virtual environment (dependencies are borrowed from the
test environment's site-packages through a plain path entry, so nothing is downloaded and the test
environment's editable install of capscale is not visible), and runs, from a folder outside the checkout,
``capscale eval`` on one of capscale's local task definitions (package data) with ``--data-dir``, and
``capscale demo`` on the demo family that ships inside the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers_models import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout[-3000:]}\n" \
                                f"{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "demo-output", "results", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".hypothesis", "shared"))
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
    (wheel,) = dist.glob("capscale-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "capscale/data/task_configs/arc_easy.yaml" in names
    assert "capscale/data/task_configs/capscale_mc_data.py" in names
    assert "capscale/synthetic/family/family.yaml" in names
    assert not any(n.startswith(("tests/", "results/")) for n in names)

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # dependencies from the test environment, as a plain path (its .pth files, among them capscale's editable
    # finder, are not processed there)
    (site / "_capscale_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    work = root / "work"
    work.mkdir()
    return {"python": py, "capscale": venv / "bin" / "capscale", "site": site, "work": work}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAPSCALE_TASKS_DIR")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    return env


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    res = _run([str(installed["python"]), "-c", "import capscale, capscale.data.tasks as t; "
                "print(capscale.__file__); print(t.local_tasks_dir())"], cwd=installed["work"], env=_env())
    mod, tasks_dir = res.stdout.split()
    assert Path(mod).is_relative_to(installed["site"]) and Path(tasks_dir).is_relative_to(installed["site"])


def test_eval_runs_a_local_task_from_the_wheel(installed, mc_data):
    work = installed["work"]
    save_tiny_checkpoint(work / "tiny" / "step100", seed=0)
    (work / "family.yaml").write_text("family: tiny\ncheckpoints:\n"
                                      "  - {path: tiny/step100, params: 60000, tokens: 500000, step: 100}\n")
    env = _env()
    env["HF_DATASETS_CACHE"] = str(work / "hf_datasets")
    _run([str(installed["capscale"]), "eval", "--family", "family.yaml", "--tasks", "arc_easy", "--data-dir",
          str(mc_data), "--limit", "3", "--out", "store", "--no-progress"], cwd=work, env=env)
    res = _run([str(installed["capscale"]), "validate", "store"], cwd=work, env=env)
    assert "valid" in res.stdout.lower()
    shards = list((work / "store").glob("*arc_easy*.parquet"))
    assert len(shards) == 1


def test_demo_runs_from_the_wheel(installed):
    out = installed["work"] / "demo"
    _run([str(installed["capscale"]), "demo", "--out", str(out)], cwd=installed["work"], env=_env(), timeout=900)
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "store").is_dir() and (out / "checks.json").is_file()

"""Every Python snippet in README.md runs as written.

The snippets name their inputs at the top (``FAMILY``, ``DATA``); the test runs them in a folder where
``family.yaml`` is a family of five tiny random-init checkpoints (different seeds and sizes) and ``data`` is the
real public data beside the checkout (``mc/`` items and ``olmo-ladder/``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers_models import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def python_snippets(text: str) -> list[str]:
    """The bodies of the ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_snippet_extraction():
    assert python_snippets("a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n") == [
        "x = 1\n", "y = 2\n"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("readme")
    lines = ["family: tiny", "checkpoints:"]
    for i in range(5):
        save_tiny_checkpoint(root / f"ck{i}", seed=i)
        n, d = 1e6 * 2 ** i, 2e7 * 2 ** i
        lines.append(f"  - {{path: ck{i}, model_id: tiny-{i}, params: {n:.0f}, tokens: {d:.0f}, step: {i + 1}}}")
    (root / "family.yaml").write_text("\n".join(lines) + "\n")
    (root / "data").symlink_to(shared_data)
    return root


def test_readme_python_snippets_run(workdir, monkeypatch):
    snippets = python_snippets((REPO / "README.md").read_text(encoding="utf-8"))
    assert snippets, "README.md has no ```python block"
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(workdir / "hf_datasets"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for i, code in enumerate(snippets):
        ns: dict = {"__name__": f"readme_snippet_{i}"}
        try:
            exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
        except Exception as e:  # pragma: no cover - the message is the point
            raise AssertionError(f"README.md python block {i + 1} failed: {type(e).__name__}: {e}") from e
    assert os.path.isdir(workdir / "scores")

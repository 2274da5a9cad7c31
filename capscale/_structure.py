"""The package's shape, checked: stages import only earlier stages, no import cycles, a pure analysis stage.

capscale's folders are its pipeline. Data flows one way::

    base (capscale, errors, _io) -> data -> eval -> analysis -> synthetic -> testing -> plotting
        -> pipelines -> benchmarks -> cli (commands, cli)

A module may import modules of its own stage and of earlier stages only, and the import graph between
modules has no cycle. Every import counts, including those inside functions (lazy imports of heavy
dependencies are fine; a lazy import of a later stage is still a backward dependency). ``analysis`` is pure:
it imports no plotting library.

Run ``python -m capscale._structure`` to print the stage graph (which stage imports which, with counts) and
any violation; it exits 1 when there is one. The test suite runs the same check.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["STAGES", "Violation", "Report", "stage_of", "import_graph", "check", "main"]

#: Stages in pipeline order; a module may import only its own stage or an earlier one.
STAGES: tuple[str, ...] = ("base", "data", "eval", "analysis", "synthetic", "testing", "plotting", "pipelines",
                           "benchmarks", "cli")

_SUBPACKAGE_STAGE = {
    "data": "data", "eval": "eval", "analysis": "analysis", "synthetic": "synthetic", "testing": "testing",
    "plotting": "plotting", "pipelines": "pipelines", "benchmarks": "benchmarks", "commands": "cli", "cli": "cli",
}
#: Packages the pure stages must never import.
_FORBIDDEN = {"analysis": ("matplotlib", "plotly", "seaborn")}
#: Folders of package data that hold no capscale modules.
_DATA_DIRS = ("data/task_configs", "synthetic/family")


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``kind`` is "backward", "cycle" or "forbidden"; ``detail`` says where."""

    kind: str
    detail: str


@dataclass
class Report:
    """The import graph between modules and stages, and the violations found."""

    modules: dict[str, set[str]]
    stage_edges: dict[tuple[str, str], int]
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no rule is broken."""
        return not self.violations

    def format(self) -> str:
        """The stage graph and the violations, as text."""
        lines = [f"capscale import graph: {len(self.modules)} modules", "stage -> imported stage (imports):"]
        for (a, b), n in sorted(self.stage_edges.items(), key=lambda kv: (STAGES.index(kv[0][0]),
                                                                          STAGES.index(kv[0][1]))):
            lines.append(f"  {a:>10} -> {b:<10} {n}")
        if self.violations:
            lines.append(f"{len(self.violations)} violation(s):")
            lines += [f"  {v.kind}: {v.detail}" for v in self.violations]
        else:
            lines.append("no backward imports, no cycles, analysis imports no plotting library")
        return "\n".join(lines)


def stage_of(module: str) -> str:
    """The stage of a dotted module name inside capscale (e.g. ``capscale.analysis.chain`` -> "analysis")."""
    parts = module.split(".")
    if len(parts) < 2:
        return "base"
    return _SUBPACKAGE_STAGE.get(parts[1], "base")


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: Path | None = None) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Static imports of every module of the package.

    Returns
    -------
    (internal, external) : tuple of dict
        ``internal[m]``: the capscale modules ``m`` imports (a ``from pkg import name`` counts as an import of
        ``pkg.name`` when that is a module, else of ``pkg``); ``external[m]``: top-level names of other packages.
    """
    root = Path(root or Path(__file__).resolve().parent)
    files = [p for p in root.rglob("*.py")
             if not any(p.is_relative_to(root / d) for d in _DATA_DIRS) and "__pycache__" not in p.parts]
    names = {_module_name(p, root): p for p in files}
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for mod, path in names.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        ext: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    (deps if a.name.split(".")[0] == "capscale" else ext).add(
                        a.name if a.name.split(".")[0] == "capscale" else a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
                if src.split(".")[0] != "capscale":
                    ext.add(src.split(".")[0])
                    continue
                for a in node.names:
                    full = f"{src}.{a.name}"
                    deps.add(full if full in names else src)
        deps.discard(mod)
        internal[mod] = {d for d in deps if d in names}
        external[mod] = ext
    return internal, external


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def check(root: Path | None = None) -> Report:
    """Check the package's import rules (see the module docstring) and return a :class:`Report`."""
    internal, external = import_graph(root)
    edges: dict[tuple[str, str], int] = defaultdict(int)
    violations: list[Violation] = []
    for mod in sorted(internal):
        a = stage_of(mod)
        for dep in sorted(internal[mod]):
            b = stage_of(dep)
            edges[(a, b)] += 1
            if STAGES.index(b) > STAGES.index(a):
                violations.append(Violation("backward", f"{mod} ({a}) imports {dep} ({b})"))
        for pkg in _FORBIDDEN.get(a, ()):
            if pkg in external[mod]:
                violations.append(Violation("forbidden", f"{mod} ({a}) imports {pkg}"))
    for comp in _cycles(internal):
        violations.append(Violation("cycle", " <-> ".join(comp)))
    return Report(modules=internal, stage_edges=dict(edges), violations=violations)


def main(argv: list[str] | None = None) -> int:
    """Print the stage graph and violations; 0 when the rules hold, 1 otherwise."""
    report = check()
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The CLI's one error path: exit codes from capscale.errors.exit_code, one-line messages, --debug tracebacks."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from capscale.analysis.laws import FitInputError
from capscale.cli import build_parser, main
from capscale.commands import core
from capscale.data import store
from capscale.data.family import FamilySpecError
from capscale.data.ingest import IngestError
from capscale.data.ladder_table import LadderError
from capscale.data.store import StoreValidationError
from capscale.data.tasks import NotMultipleChoiceError, TaskError, UnknownTaskError
from capscale.errors import CapscaleError, InputError, UsageError, exit_code
from capscale.eval.ray import ExecutorError
from capscale.eval.scoring import CheckpointNotFoundError, ScoringError
from capscale.eval.shards import EvalError
from capscale.pipelines.demo import DemoError


def _leaf_commands() -> list[list[str]]:
    """The argv prefix of every runnable command (``["ladder", "train"]``, ``["analyze"]``, ...)."""
    out: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and prefix:
            out.append(prefix)
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return out


def _one_line(err: str) -> str:
    """The only line of ``err`` (fails when there are several, or a traceback)."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def bad_store(tmp_path):
    """A store whose ``loglik`` column is missing, and its path."""
    path = tmp_path / "bad.parquet"
    store.example_store(n_models=3, n_items=5).drop(columns="loglik").to_parquet(path)
    return path


@pytest.fixture
def good_store(tmp_path):
    path = tmp_path / "good.parquet"
    store.write(store.example_store(n_models=3, n_items=5), path)
    return path


# ------------------------------------------------------------------------------------------------
# one error base


@pytest.mark.parametrize("cls, builtin", [
    (FamilySpecError, ValueError), (IngestError, ValueError), (LadderError, ValueError),
    (StoreValidationError, ValueError), (TaskError, ValueError), (UnknownTaskError, KeyError),
    (NotMultipleChoiceError, ValueError), (ScoringError, ValueError), (CheckpointNotFoundError, ValueError),
    (EvalError, RuntimeError), (ExecutorError, ValueError), (FitInputError, ValueError), (DemoError, RuntimeError),
])
def test_every_error_class_derives_from_capscale_error_and_keeps_its_builtin(cls, builtin):
    assert issubclass(cls, CapscaleError) and issubclass(cls, builtin)
    assert exit_code(cls.__new__(cls)) == 1


# ------------------------------------------------------------------------------------------------
# invalid input: exit 1, one line naming the file


def test_invalid_input_exits_1_with_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.parquet"
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["validate", str(missing)], f"capscale validate: error: score store {str(missing)!r} does not exist"),
        (["analyze", str(missing), "--out", str(tmp_path / "a")],
         f"capscale analyze: error: score store {str(missing)!r} does not exist"),
        (["analyze", str(afile), "--out", str(tmp_path / "a")],
         f"capscale analyze: error: score store {str(afile)!r}: expected a .parquet or .csv file, or a directory "
         "of them"),
        (["emergence", str(missing), "--all-tasks", "--out", str(tmp_path / "e")],
         f"capscale emergence: error: input {str(missing)!r} does not exist"),
        (["report", str(tmp_path / "nope")],
         f"capscale report: error: results folder {str(tmp_path / 'nope')!r} does not exist"),
        (["demo", "--family-dir", str(tmp_path / "nofamily"), "--out", str(tmp_path / "d")],
         f"capscale demo: error: demo family not found in {str(tmp_path / 'nofamily')!r}"),
        (["ladder", "export", str(tmp_path / "nofamily"), "--out", str(tmp_path / "x")],
         f"capscale ladder export: error: [Errno 2] No such file or directory: {str(tmp_path / 'nofamily')!r}"),
        (["synthetic", "generate", "--n-people", "20", "--n-items", "5", "--out", str(afile / "sub")],
         f"capscale synthetic generate: error: [Errno 20] Not a directory: {str(afile / 'sub')!r}"),
        (["family", "scan", str(tmp_path / "nodir")],
         f"capscale family scan: error: family scan: {str(tmp_path / 'nodir')!r} is not a directory"),
        (["ingest", "lm-eval", str(tmp_path / "nolog"), "--family", str(tmp_path / "nofam.yaml"), "--out",
          str(tmp_path / "s")], f"capscale ingest lm-eval: error: family spec {str(tmp_path / 'nofam.yaml')!r} does not exist"),
    ]
    for argv, first in cases:
        assert main(argv) == 1, argv
        captured = capsys.readouterr()
        assert _one_line(captured.err).startswith(first), (argv, captured.err)
        assert "Traceback" not in captured.out


def _bad_paths(tmp_path):
    """A missing path, an empty file, a folder and a plain file, each under ``tmp_path``."""
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "fam.yaml").write_text("family: f\ncheckpoints:\n  - {path: org/m, params: 10, tokens: 20}\n")
    return {k: str(tmp_path / v) for k, v in (("missing", "missing.yaml"), ("empty", "empty.yaml"), ("dir", "adir"),
                                         ("file", "afile"), ("fam", "fam.yaml"))}


@pytest.mark.parametrize("argv, first", [
    (["report", "{missing}"], "results folder {missing!r} does not exist"),
    (["report", "{file}"], "results folder {file!r} is a file, not a folder"),
    (["report", "{dir}", "-o", "{file}/r.html"], "cannot write the report to '{file}/r.html': {file!r} is a file"),
    (["report", "{dir}", "-o", "{dir}"], "cannot write the report to {dir!r}: it is a folder"),
    (["eval", "--family", "{missing}", "--tasks", "x", "--out", "{dir}/o"], "family spec {missing!r} does not exist"),
    (["eval", "--family", "{empty}", "--tasks", "x", "--out", "{dir}/o"],
     "family spec {empty!r}: expected a mapping with 'family' and 'checkpoints'"),
    (["eval", "--family", "{fam}", "--tasks", "x", "--out", "{dir}/o", "--include-path", "{missing}"],
     "--include-path {missing!r} is not a directory"),
    (["eval", "--family", "{fam}", "--tasks", "x", "--out", "{dir}/o", "--data-dir", "{file}"],
     "data root {file!r} (from --data-dir or $CAPSCALE_DATA) is not a directory"),
    (["ingest", "lm-eval", "{dir}", "--family", "{dir}", "--out", "{dir}/s"],
     "family spec {dir!r} is a folder, not a spec file"),
    (["ingest", "lm-eval", "{missing}", "--family", "{fam}", "--out", "{dir}/s"], "lm-eval log {missing!r} does not exist"),
    (["ingest", "lm-eval", "{dir}", "--family", "{fam}", "--out", "{dir}/s"], "no samples_*.jsonl files under {dir!r}"),
    (["family", "scan", "{file}"], "family scan: {file!r} is not a directory"),
    (["family", "scan", "{dir}"], "family scan: no checkpoint folders (config.json + weights) under {dir!r}"),
    (["ladder", "check", "{empty}"], "{empty}: a family spec needs 'family' and 'checkpoints'"),
    (["demo", "--family-dir", "{dir}", "--out", "{dir}/d"], "demo family not found in {dir!r}"),
])
def test_missing_empty_and_folder_inputs_are_one_line(argv, first, tmp_path, capsys):
    paths = _bad_paths(tmp_path)
    argv = [a.format(**paths) for a in argv]
    assert main(argv) == 1, argv
    captured = capsys.readouterr()
    prog = " ".join(argv[:2] if argv[0] in ("ingest", "family", "ladder") else argv[:1])
    assert _one_line(captured.err).startswith(f"capscale {prog}: error: {first.format(**paths)}"), captured.err


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("command", [
    ["validate"], ["analyze", "--out", "{tmp}/a"], ["mass", "--out", "{tmp}/m"],
    ["emergence", "--all-tasks", "--out", "{tmp}/e"], ["fit", "--form", "compute_law"],
    ["predict", "--target", "params=1e9,tokens=2e10"], ["backtest"]], ids=lambda c: c[0])
def test_an_empty_store_file_is_one_line(command, suffix, tmp_path, capsys):
    empty = tmp_path / f"empty{suffix}"
    empty.write_text("")
    argv = [command[0], str(empty), *(a.format(tmp=tmp_path) for a in command[1:])]
    assert main(argv) == 1
    assert str(empty) in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["validate", "analyze", "emergence"])
def test_an_invalid_store_exits_1_naming_the_file_and_every_problem(command, bad_store, tmp_path, capsys):
    argv = {"validate": ["validate", str(bad_store)],
            "analyze": ["analyze", str(bad_store), "--out", str(tmp_path / "out")],
            "emergence": ["emergence", str(bad_store), "--all-tasks", "--out", str(tmp_path / "out")]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first, *problems = err.splitlines()
    assert first == f"capscale {command}: error: score store {str(bad_store)!r} has 1 problem(s):"
    assert len(problems) == 1 and "missing_column" in problems[0] and "'loglik'" in problems[0]


def test_a_selection_the_input_lacks_is_invalid_input(good_store, tmp_path, capsys):
    assert main(["analyze", str(good_store), "--tasks", "nope", "--out", str(tmp_path / "a")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"capscale analyze: error: task(s) ['nope'] not in {good_store}; it has ")
    assert main(["analyze", str(good_store), "--family", "nope", "--out", str(tmp_path / "a")]) == 1
    assert _one_line(capsys.readouterr().err).startswith(f"capscale analyze: error: no rows of {good_store} left")
    assert main(["emergence", str(good_store), "--family", "nope", "--all-tasks", "--out", str(tmp_path / "e")]) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"capscale emergence: error: family must be one of ['example'], not 'nope' ({good_store})")
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()  # checked before anything is written


def test_validate_reports_valid_and_invalid(good_store, tmp_path, capsys):
    assert main(["validate", str(good_store)]) == 0
    assert capsys.readouterr().out.startswith(f"{good_store}: valid (")
    df = store.example_store(n_models=3, n_items=5)
    df.loc[0, "loglik"] = np.inf
    df.to_parquet(tmp_path / "inf.parquet")
    assert main(["validate", str(tmp_path / "inf.parquet")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"capscale validate: error: score store {str(tmp_path / 'inf.parquet')!r} has 1 problem")
    assert "non_finite_loglik" in err


# ------------------------------------------------------------------------------------------------
# usage errors: exit 2


LEAVES = _leaf_commands()


def test_every_command_is_covered():
    names = {" ".join(c) for c in LEAVES}
    assert {"demo", "report", "analyze", "validate", "emergence", "mass", "mass-sim", "eval", "family scan",
            "ingest lm-eval", "ladder train", "ladder export", "ladder check", "synthetic generate", "fit", "predict",
            "backtest", "data fetch", "bench chain", "bench scoring", "bench emergence", "bench ray_executor"} <= names


@pytest.mark.parametrize("argv", LEAVES, ids=[" ".join(c) for c in LEAVES])
def test_argparse_errors_exit_2_naming_the_command(argv, capsys):
    assert main([*argv, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: capscale {' '.join(argv)} ")
    assert err.splitlines()[-1].startswith(f"capscale {' '.join(argv)}: error: ")


def test_unknown_command_and_no_command_exit_2(capsys):
    assert main(["nope"]) == 2
    assert "capscale: error: argument COMMAND: invalid choice: 'nope'" in capsys.readouterr().err
    assert main([]) == 2
    assert "usage: capscale" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "Exit status: 0 success, 1 invalid input" in capsys.readouterr().out
    assert main(["analyze", "--help"]) == 0 and "--debug" in capsys.readouterr().out


@pytest.mark.parametrize("prog, argv, message", [
    ("capscale emergence", ["emergence", "{store}", "--out", "{tmp}/e"], "give exactly one of --task T or --all-tasks"),
    ("capscale ladder train", ["ladder", "train", "--sizes", "zz", "--out", "{tmp}/l"],
     "unknown size(s) ['zz']; known: "),
    ("capscale synthetic generate", ["synthetic", "generate", "--n-people", "1", "--out", "{tmp}/g"],
     "WorldConfig.n_people = 1 is too small (need >= 8)"),
])
def test_usage_errors_raised_by_a_command_exit_2_with_its_usage(prog, argv, message, good_store, tmp_path, capsys):
    argv = [a.format(store=good_store, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} ")
    assert err.splitlines()[-1].startswith(f"{prog}: error: {message}")
    assert "Traceback" not in err
    assert not any(tmp_path.glob("[elg]"))


# ------------------------------------------------------------------------------------------------
# --debug, bugs, interrupts


@pytest.mark.parametrize("argv", [["--debug", "report", "{nope}"], ["report", "{nope}", "--debug"]])
def test_debug_reraises_with_the_traceback(argv, tmp_path):
    argv = [a.format(nope=tmp_path / "nope") for a in argv]
    with pytest.raises(FileNotFoundError, match="results folder .* does not exist"):
        main(argv)


def test_debug_reraises_usage_errors(good_store, tmp_path):
    with pytest.raises(UsageError, match="give exactly one of --task T or --all-tasks"):
        main(["emergence", str(good_store), "--out", str(tmp_path / "e"), "--debug"])


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    def broken(args: argparse.Namespace) -> None:
        raise ValueError("a bug, not an input problem")

    monkeypatch.setattr(core, "_report", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["report", str(tmp_path)])


def test_interrupt_exits_130(monkeypatch, tmp_path, capsys):
    def interrupted(args: argparse.Namespace) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "_report", interrupted)
    assert main(["report", str(tmp_path)]) == 130
    assert _one_line(capsys.readouterr().err) == "capscale report: interrupted"


def test_input_errors_raised_by_a_handler_are_mapped(monkeypatch, tmp_path, capsys):
    def bad(args: argparse.Namespace) -> None:
        raise InputError(f"{args.results_dir}: not a results folder")

    monkeypatch.setattr(core, "_report", bad)
    assert main(["report", str(tmp_path)]) == 1
    assert _one_line(capsys.readouterr().err) == f"capscale report: error: {tmp_path}: not a results folder"

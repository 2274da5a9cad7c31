"""The Ray executor (capscale.eval.ray): same store as a plain loop, skips, bounded retries, a killed worker.

One local Ray instance (2 CPUs, no dashboard) serves the whole module and is shut down at the end.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capscale.data import store
from capscale.eval import ray as executors

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'capscale[ray]'")


# ---------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class FakeShard:
    """A (checkpoint, task) shard for a generic shard function."""

    model_id: str
    task: str
    n_items: int = 5
    k: int = 4


def fake_run(shard: FakeShard, options: dict) -> pd.DataFrame:
    """Deterministic rows for a shard (a pure function of its inputs, like run_shard)."""
    seed = sum(map(ord, shard.model_id + "/" + shard.task)) + options.get("seed", 0)
    rng = np.random.default_rng(seed)
    n = shard.n_items * shard.k
    doc = np.repeat(np.arange(shard.n_items), shard.k)
    c = np.tile(np.arange(shard.k), shard.n_items)
    return pd.DataFrame({"model_id": shard.model_id, "family": "fake", "params": 1000, "tokens": 10**6,
                         "task": shard.task, "doc_id": doc, "choice_idx": c, "is_correct": c == doc % shard.k,
                         "loglik": rng.normal(-10, 2, n), "n_chars": 3 + c, "n_bytes": 3 + c})


class FailFor:
    """Raise for one shard on every attempt (a deterministic error)."""

    def __init__(self, victim: str):
        self.victim = victim

    def __call__(self, shard: FakeShard, options: dict) -> pd.DataFrame:
        if shard.model_id == self.victim:
            raise RuntimeError(f"checkpoint {shard.model_id} is broken")
        return fake_run(shard, options)


class HangOnceFor:
    """On its first attempt the victim shard writes its worker's pid to a marker file and hangs (to be killed)."""

    def __init__(self, victim: FakeShard, marker: str):
        self.victim, self.marker = victim, marker

    def __call__(self, shard: FakeShard, options: dict) -> pd.DataFrame:
        if shard == self.victim and not os.path.exists(self.marker):
            tmp = self.marker + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(tmp, self.marker)
            time.sleep(120)
        return fake_run(shard, options)


def write_to_path(shard: FakeShard, options: dict) -> str:
    """A shard function that writes its own file (in options['out']) and returns the path."""
    df = fake_run(shard, options)
    return str(store.write_shard(df, options["out"]))


SHARDS = [FakeShard(f"m{i}", t) for i in range(4) for t in ("taskA", "taskB")]


def local_store(shards, out: Path, options: dict) -> Path:
    for s in shards:
        store.write_shard(fake_run(s, options), out)
    return out


def assert_same_store(a: Path, b: Path) -> None:
    fa = sorted(p.name for p in a.glob("*.parquet"))
    fb = sorted(p.name for p in b.glob("*.parquet"))
    assert fa == fb and fa
    assert not list(b.glob("_tmp*")), "temporary files left behind"
    for name in fa:
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name), check_exact=True)
    pd.testing.assert_frame_equal(store.read(a), store.read(b), check_exact=True)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (2 CPUs); shut down afterwards."""
    import ray.cloudpickle

    # Workers cannot import this test module: ship its functions and classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if ray.is_initialized():  # pragma: no cover - a session left over by another test module
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        yield ray
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------------------------------------- tests


def test_missing_ray_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'capscale\[ray\]'"):
        executors.require_ray()
    with pytest.raises(ImportError, match=r"capscale\[ray\]"):
        executors.run_ray([FakeShard("m0", "t")], fake_run, {}, "/nonexistent-capscale-store")


def test_bad_options_are_errors(tmp_path):
    with pytest.raises(executors.ExecutorError, match="write_from"):
        executors.run_ray(SHARDS, fake_run, {}, tmp_path, write_from="nfs")
    with pytest.raises(executors.ExecutorError, match="max_retries"):
        executors.run_ray(SHARDS, fake_run, {}, tmp_path, max_retries=-1)
    with pytest.raises(executors.ExecutorError, match="same file"):
        executors.run_ray([SHARDS[0], SHARDS[0]], fake_run, {}, tmp_path)


@pytest.mark.parametrize("write_from", ["driver", "worker"])
def test_ray_store_identical_to_local_loop(ray_local, tmp_path, write_from):
    opts = {"seed": 3}
    ref = local_store(SHARDS, tmp_path / "local", opts)
    rep = executors.run_ray(SHARDS, fake_run, opts, tmp_path / "ray", write_from=write_from, progress=False)
    assert rep.ok and len(rep.done) == len(SHARDS) and not rep.skipped and not rep.retried
    assert all(o.n_rows == 20 and o.attempts == 1 for o in rep.done)
    assert_same_store(ref, tmp_path / "ray")


def test_finished_shards_are_skipped(ray_local, tmp_path):
    out = tmp_path / "store"
    executors.run_ray(SHARDS, fake_run, {}, out, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    (out / store.shard_name("m2", "taskB")).unlink()
    (out / store.shard_name("m3", "taskA")).write_bytes(b"")  # an empty (incomplete) file is redone
    rep = executors.run_ray(SHARDS, fake_run, {}, out, progress=False)
    assert sorted(o.key for o in rep.done) == ["m2 / taskB", "m3 / taskA"]
    assert len(rep.skipped) == len(SHARDS) - 2
    for name, t in mtimes.items():
        if name not in {store.shard_name("m2", "taskB"), store.shard_name("m3", "taskA")}:
            assert (out / name).stat().st_mtime_ns == t
    assert_same_store(local_store(SHARDS, tmp_path / "local", {}), out)
    # nothing left: no Ray task is even submitted
    rep = executors.run_ray(SHARDS, fake_run, {}, out, progress=False)
    assert len(rep.skipped) == len(SHARDS) and not rep.done


def test_failing_shard_retried_bounded_then_reported(ray_local, tmp_path):
    out = tmp_path / "store"
    rep = executors.run_ray(SHARDS, FailFor("m1"), {}, out, max_retries=1, progress=False)
    assert not rep.ok
    assert sorted(o.key for o in rep.failed) == ["m1 / taskA", "m1 / taskB"]
    for o in rep.failed:
        assert o.attempts == 2 and len(o.errors) == 2
        assert all("RuntimeError" in e and "checkpoint m1 is broken" in e for e in o.errors)
    assert len(rep.done) == len(SHARDS) - 2  # the others complete
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(
        store.shard_name(s.model_id, s.task) for s in SHARDS if s.model_id != "m1")
    text = rep.summary()
    assert "FAILED m1 / taskA after 2 attempt(s)" in text and "checkpoint m1 is broken" in text
    frame = rep.to_frame()
    assert list(frame.loc[frame["status"] == "failed", "key"]) == ["m1 / taskA", "m1 / taskB"]


def test_killed_worker_is_retried_and_store_complete(ray_local, tmp_path):
    out = tmp_path / "store"
    marker = str(tmp_path / "victim.pid")
    killed: list[int] = []

    def killer() -> None:  # the test kills the victim's worker process mid-run
        deadline = time.time() + 60
        while time.time() < deadline and not os.path.exists(marker):
            time.sleep(0.05)
        if os.path.exists(marker):
            pid = int(Path(marker).read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    victim = FakeShard("m2", "taskA")
    rep = executors.run_ray(SHARDS, HangOnceFor(victim, marker), {}, out, max_retries=2, write_from="worker",
                            progress=False)
    th.join(timeout=5)
    assert killed, "the victim shard never started"
    assert rep.ok and len(rep.done) == len(SHARDS)
    retried = {o.key: o for o in rep.retried}
    assert "m2 / taskA" in retried  # (a task Ray had already queued on the dead worker may be retried too)
    for o in retried.values():
        assert o.status == "done" and o.attempts == 2 and len(o.errors) == 1
        assert "WorkerCrashedError" in o.errors[0], o.errors
    assert "retried m2 / taskA: done after 2 attempts" in rep.summary()
    assert "WorkerCrashedError" in rep.summary()
    assert_same_store(local_store(SHARDS, tmp_path / "local", {}), out)


def test_shard_function_returning_a_path(ray_local, tmp_path):
    src = tmp_path / "worker-side"
    rep = executors.run_ray(SHARDS[:3], write_to_path, {"out": str(src)}, tmp_path / "store",
                            write_from="driver", progress=False)
    assert rep.ok and all(o.n_rows == 20 for o in rep.done)
    assert_same_store(local_store(SHARDS[:3], tmp_path / "local", {}), tmp_path / "store")


def test_infeasible_gpu_request_is_an_error(ray_local, tmp_path):
    with pytest.raises(executors.ExecutorError, match="gpus-per-shard 1 cannot be met"):
        executors.run_ray(SHARDS[:1], fake_run, {}, tmp_path, gpus_per_shard=1)
    assert executors.resolve_gpus_per_shard(ray_local, None) == 0.0  # default on a CPU-only cluster


# ---------------------------------------------------------------------------------------------- capscale eval

TASKS = "bench_colour,bench_size"


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    """8 tiny random-init checkpoints (GPT-NeoX, 2 layers, hidden 32) and 2 include-path tasks of 4 items."""
    from capscale.benchmarks.ray_executor import make_setup

    return make_setup(tmp_path_factory.mktemp("rayfam"), n_checkpoints=8, n_items=4, hidden=32)


@pytest.fixture
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets"))


def kill_when_running(title: str, killed: list[int], timeout: float = 120) -> threading.Thread:
    """Start a thread that SIGKILLs the Ray worker process whose title is ``ray::<title>`` once, when it runs."""
    want = f"ray::{title}".encode()

    def run() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and not killed:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmd = fh.read()
                except OSError:
                    continue
                if cmd.startswith(want):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.01)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finding the worker process needs /proc (Linux)")
@pytest.mark.usefixtures("_private_datasets_cache")
def test_eval_ray_with_killed_worker_gives_local_store(ray_local, eval_setup, tmp_path, caplog):
    """8 checkpoints x 2 tasks on 2 Ray workers; one worker is SIGKILLed mid-shard: the shard is retried, the
    store is complete and identical to --executor local, and the report names the retried shard."""
    from capscale.eval.evaluate import evaluate
    from capscale.eval.shards import RUN_LOG, EvalOptions

    family, tasks = eval_setup
    opts = EvalOptions(progress=False, batch_size=4)
    local = evaluate(family, TASKS, tmp_path / "local", include_path=tasks, options=opts)
    assert len(local) == 16 and all(r.status == "done" for r in local)

    killed: list[int] = []
    th = kill_when_running("capscale-shard m00/bench_colour", killed)
    res = evaluate(family, TASKS, tmp_path / "ray", include_path=tasks, options=opts, executor="ray",
                   executor_options={"max_retries": 2, "warm_up": False})  # slow first shard: easy to catch
    th.join(timeout=5)
    assert killed, "the worker running m00/bench_colour was never seen"
    assert len(res) == 16 and all(r.status == "done" for r in res)
    by_key = {f"{r.model_id}/{r.task}": r for r in res}
    victim = by_key["m00/bench_colour"]
    assert victim.attempts == 2 and len(victim.attempt_errors) == 1
    assert "WorkerCrashedError" in victim.attempt_errors[0]
    assert "retried m00/bench_colour: done after 2 attempts" in caplog.text
    log = json.loads((tmp_path / "ray" / RUN_LOG).read_text())["runs"][-1]
    assert log["status"] == "done" and log["executor"] == "ray"
    entry = next(s for s in log["shards"] if (s["model_id"], s["task"]) == ("m00", "bench_colour"))
    assert entry["attempts"] == 2 and "WorkerCrashedError" in entry["attempt_errors"][0]

    assert_same_store(tmp_path / "local", tmp_path / "ray")
    for p in (tmp_path / "local").glob("*.parquet"):
        assert p.read_bytes() == (tmp_path / "ray" / p.name).read_bytes(), p.name


@pytest.mark.usefixtures("_private_datasets_cache")
def test_eval_cli_ray_worker_writes_skips_finished(ray_local, eval_setup, tmp_path, capsys):
    import shutil

    from capscale.cli import main

    family, tasks = eval_setup
    base = ["eval", "--family", str(family), "--tasks", TASKS, "--include-path", str(tasks),
            "--model-id", "m01", "--model-id", "m02", "--batch-size", "4", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "local")]) == 0
    out = tmp_path / "ray"
    out.mkdir()
    shutil.copy(tmp_path / "local" / store.shard_name("m01", "bench_colour"), out)  # finished before: skipped
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--executor", "ray", "--write-from", "worker"]) == 0
    text = capsys.readouterr().out
    assert "3 shard(s) written, 1 already finished (skipped)" in text
    assert_same_store(tmp_path / "local", out)
    # Ray-only flags with the local executor, and a GPU request a CPU-only cluster cannot meet
    assert main([*base, "--out", str(out), "--address", "auto"]) == 2
    assert "only apply to --executor ray" in capsys.readouterr().err
    (out / store.shard_name("m02", "bench_size")).unlink()
    assert main([*base, "--out", str(out), "--executor", "ray", "--gpus-per-shard", "1"]) == 1  # no GPU: invalid
    assert "cannot be met" in capsys.readouterr().err


def test_eval_cli_without_ray_says_how_to_install(monkeypatch, capsys):
    from capscale.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    rc = main(["eval", "--family", "x.yaml", "--tasks", "t", "--out", "o", "--executor", "ray"])
    assert rc == 2 and "pip install 'capscale[ray]'" in capsys.readouterr().err


@pytest.mark.usefixtures("_private_datasets_cache")
def test_eval_ray_broken_checkpoint_reported_others_complete(ray_local, eval_setup, tmp_path, capsys):
    import shutil

    from capscale.cli import main
    from capscale.eval.shards import RUN_LOG

    family, tasks = eval_setup
    root = family.parent
    broken = tmp_path / "broken"
    shutil.copytree(root / "m00", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    spec = tmp_path / "family.yaml"
    spec.write_text(f"family: tiny\ncheckpoints:\n  - {{path: {root / 'm01'}, model_id: m01, params: 5, tokens: 7}}\n"
                    f"  - {{path: {broken}, model_id: bad, params: 5, tokens: 9}}\n")
    out = tmp_path / "store"
    rc = main(["eval", "--family", str(spec), "--tasks", TASKS, "--include-path", str(tasks), "--out", str(out),
               "--batch-size", "4", "--no-progress", "--executor", "ray", "--max-retries", "1"])
    err = capsys.readouterr().err
    assert rc == 1  # invalid input: a checkpoint that cannot be loaded
    assert "FAILED bad/bench_colour after 2 attempt(s)" in err and "FAILED bad/bench_size after 2 attempt(s)" in err
    assert "checkpoint 'bad'" in err and "cannot load" in err
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(store.shard_name("m01", t)
                                                                   for t in ("bench_colour", "bench_size"))
    log = json.loads((out / RUN_LOG).read_text())["runs"][-1]
    assert log["status"] == "failed"
    failed = sorted((s["model_id"], s["task"], s["attempts"]) for s in log["shards"] if s["status"] == "failed")
    assert failed == [("bad", "bench_colour", 2), ("bad", "bench_size", 2)]


def test_warm_up_configs_one_per_architecture(tmp_path):
    from capscale.data.family import Checkpoint

    def ck(name: str, model_type: str | None, gguf: str | None = None) -> Checkpoint:
        d = tmp_path / name
        d.mkdir()
        if model_type:
            (d / "config.json").write_text(json.dumps({"model_type": model_type}))
        return Checkpoint(model_id=name, path=str(d), params=1, tokens=1, gguf_file=gguf)

    cks = [ck("a", "gpt_neox"), ck("b", "gpt_neox"), ck("c", "llama"), ck("d", None), ck("e", "llama", "m.gguf"),
           Checkpoint(model_id="hub", path="EleutherAI/pythia-70m", params=1, tokens=1, revision="step1000")]
    got = executors._warm_up_configs(cks, trust_remote_code=True)
    assert [Path(c["path"]).name for c in got] == ["a", "c", "d"]  # "d" and the hub id: one unknown architecture
    assert all(c["trust_remote_code"] for c in got)
    assert len(executors._warm_up_configs(cks, False, limit=2)) == 2


def test_warm_up_sets_env_and_survives_bad_configs(eval_setup, monkeypatch):
    family, _ = eval_setup
    monkeypatch.delenv("CAPSCALE_WARM_UP_PROBE", raising=False)
    configs = [{"path": str(family.parent / "m00")}, {"path": str(family.parent / "no-such-checkpoint")}]
    assert executors._warm_up(None, {"CAPSCALE_WARM_UP_PROBE": "1"}, configs) == os.getpid()
    assert os.environ["CAPSCALE_WARM_UP_PROBE"] == "1"
    assert "transformers.models.gpt_neox.modeling_gpt_neox" in sys.modules


def test_shard_threads_match_local_on_the_driver_host_only(monkeypatch):
    import socket

    runner = executors.EvalShardRunner(driver_host=socket.gethostname(), driver_threads=6, reserved_threads=2)
    assert runner.threads_here() == 6  # the local executor's count: byte-identical sums
    assert executors.EvalShardRunner(driver_host="another-node", driver_threads=6,
                                     reserved_threads=2).threads_here() == 2  # what Ray reserved there
    assert executors.EvalShardRunner(threads=3, driver_host=socket.gethostname(), driver_threads=6).threads_here() == 3
    import torch

    here = executors.EvalShardRunner(driver_host=socket.gethostname(), driver_threads=executors.TORCH_DEFAULT)
    assert here.threads_here() == torch.get_num_interop_threads()  # one per physical core, worked out on the worker
    with pytest.raises(executors.ExecutorError, match="threads_per_shard"):
        executors.ray_executor([], _Opts(), lambda r: None, threads_per_shard=0)


@dataclass
class _Opts:
    device: str = "cpu"
    progress: bool = False
    trust_remote_code: bool = False


@pytest.mark.usefixtures("_private_datasets_cache")
def test_eval_ray_forwards_driver_env_without_runtime_env(ray_local, eval_setup, tmp_path, monkeypatch):
    """The driver's HF_*/CAPSCALE_* variables reach the shard (set after the workers started, so only the runner's
    own forwarding can deliver them)."""
    from capscale.eval.evaluate import evaluate
    from capscale.eval.shards import EvalOptions

    family, tasks = eval_setup
    monkeypatch.setenv("CAPSCALE_FORWARD_PROBE", "from-the-driver")
    monkeypatch.setattr(executors, "EvalShardRunner", _ProbeRunner)  # shipped by value to the workers
    res = evaluate(family, TASKS, tmp_path / "ray", include_path=tasks, model_ids=["m03"],
                   options=EvalOptions(progress=False, batch_size=4), executor="ray")
    assert sorted({r.note for r in res}) == ["from-the-driver"]


@dataclass(frozen=True)
class _ProbeRunner(executors.EvalShardRunner):
    """The eval runner, reporting CAPSCALE_FORWARD_PROBE as seen on the worker in the shard's ``note``."""

    def __call__(self, shard, options):
        out = super().__call__(shard, options)
        out.meta.note = os.environ.get("CAPSCALE_FORWARD_PROBE")
        return out


@pytest.mark.parametrize("env", [{}, {"OMP_NUM_THREADS": "3"}, {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}])
def test_default_threads_match_a_fresh_torch_process(env):
    """A Ray worker (OMP_NUM_THREADS=1, set by Ray) gets the thread count of a local run with the driver's
    environment, and a driver without thread variables does not import torch for it."""
    import subprocess

    def py(code: str, extra: dict[str, str]) -> str:
        clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        return subprocess.run([sys.executable, "-c", code], env={**clean, **extra}, capture_output=True, text=True,
                              check=True).stdout.strip()

    local = int(py("import torch; print(torch.get_num_threads())", env))
    spec = py("import sys; from capscale.eval import ray as executors; s = executors.local_thread_count(); "
              "print(repr(s), 'torch' in sys.modules)", env)
    spec, imported = spec.rsplit(" ", 1)
    assert imported == ("True" if env else "False")
    worker = int(py(f"from capscale.eval import ray as executors; print(executors.default_threads_for({spec}))",
                    {"OMP_NUM_THREADS": "1"}))
    assert worker == local

"""Ray executor driver overhead: ``capscale eval --executor ray`` vs ``--executor local``, wall time.

Builds N tiny random-init checkpoints (GPT-NeoX, 2 layers, hidden 32, a BPE tokenizer trained on the fly; no
download) and two multiple-choice tasks (lm-eval include-path YAML + JSONL, ``--items`` items of 4 choices),
then times ``capscale eval`` on them with each executor, each run a fresh process (cold imports count in its
wall time), alternating the executors ``--repeats`` times into fresh stores. Two Ray modes:

``cold``      ``--executor ray`` starts (and stops) a local Ray instance with all this machine's cores in every
              run: Ray's own start-up is in the wall time.
``attached``  ``--executor ray --address HOST:PORT`` joins a Ray instance started once by this benchmark (as on a
              cluster, where ``ray start`` runs before any evaluation): the run pays for connecting and for
              its own worker processes (new for every job), not for booting Ray.

With ``cold``, every repeat also times a process that only starts a local Ray instance, runs one empty task per
CPU and shuts it down (``ray-start-stop``): Ray's own fixed cost, paid once per cluster rather than per evaluation;
the report subtracts it from the cold runs to show the executor's share.
 It checks that every store is complete and that the Ray stores are
byte-identical to the local one, and reports the median wall time of each executor and their
ratio (the reference point: Ray within 1.5x of local for 8 checkpoints x 2 tasks on 2 cores).

The machine's load average is printed beside every run: on a shared machine the timings move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from capscale.benchmarks import emit_report
from capscale.errors import UsageError

TASK_YAML = ("task: {name}\noutput_type: multiple_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
             "    test: {name}.jsonl\ntest_split: test\ndoc_to_text: \"{{{{context}}}}\"\n"
             "doc_to_choice: \"{{{{choices}}}}\"\ndoc_to_target: \"{{{{gold}}}}\"\ntarget_delimiter: \" \"\n"
             "metadata:\n  version: 1.0\n")
_WORDS = ["red", "blue", "green", "yellow", "round", "square", "small", "large", "light", "heavy", "warm", "cold"]


def make_setup(root: Path, n_checkpoints: int, n_items: int, *, hidden: int = 32) -> tuple[Path, Path]:
    """Write ``n_checkpoints`` tiny checkpoints, a family spec and two tasks under ``root``.

    Returns
    -------
    (Path, Path)
        The family spec and the task folder (for ``--include-path``).
    """
    from capscale.benchmarks.scoring import random_model, train_bpe_tokenizer

    tok = train_bpe_tokenizer(vocab_size=600)
    lines = ["family: tiny", "checkpoints:"]
    for i in range(n_checkpoints):
        model = random_model("pythia-tiny", vocab_size=len(tok), seed=i, hidden_size=hidden,
                             intermediate_size=2 * hidden)
        path = root / f"m{i:02d}"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"  - {{path: m{i:02d}, model_id: m{i:02d}, params: {params}, tokens: {10**6 * 2**i}}}")
    spec = root / "family.yaml"
    spec.write_text("\n".join(lines) + "\n")
    tasks = root / "tasks"
    tasks.mkdir(exist_ok=True)
    for t, noun in (("bench_colour", "colour"), ("bench_size", "size")):
        recs = []
        for d in range(n_items):
            choices = [_WORDS[(d + j * 3) % len(_WORDS)] + ("" if j < 3 else " one") for j in range(4)]
            recs.append({"doc_id": d, "context": f"Question {d}: the {noun} of object {d} is",
                         "choices": choices, "gold": d % 4})
        (tasks / f"{t}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (tasks / f"{t}.yaml").write_text(TASK_YAML.format(name=t))
    return spec, tasks


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, p.stdout + p.stderr


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", type=int, default=8, help="tiny checkpoints (default 8)")
    p.add_argument("--items", type=int, default=40, help="items per task (default 40; 2 tasks)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each executor, alternating (default 3)")
    p.add_argument("--write-from", default="driver", choices=["driver", "worker"], help="Ray write mode")
    p.add_argument("--modes", default="cold,attached", help="Ray modes to time: cold, attached (default both)")
    p.add_argument("--out", default=None, help="also write the report to this file")


def run(args: argparse.Namespace) -> int:
    from capscale.data import store

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}
    exe = [sys.executable, "-m", "capscale.cli"]
    with tempfile.TemporaryDirectory(prefix="capscale-bench-ray-") as tmp:
        root = Path(tmp)
        env["HF_DATASETS_CACHE"] = str(root / "hf_datasets")
        spec, tasks = make_setup(root, args.checkpoints, args.items)
        base = [*exe, "eval", "--family", str(spec), "--tasks", "bench_colour,bench_size", "--include-path",
                str(tasks), "--batch-size", "auto", "--no-progress"]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = sorted(set(modes) - {"cold", "attached"})
        if bad:
            raise UsageError(f"unknown --modes {bad}; use cold and/or attached")
        executors = ["local"] + [f"ray-{m}" for m in modes]
        walls: dict[str, list[float]] = {ex: [] for ex in executors}
        start_stop: list[float] = []
        probe = [sys.executable, "-c", "import os, ray; ray.init(address='local', num_cpus=os.cpu_count(), "
                 "include_dashboard=False, log_to_driver=False); f = ray.remote(lambda: 0); "
                 "ray.get([f.remote() for _ in range(os.cpu_count())]); ray.shutdown()"]
        runs = []
        address = None
        if "attached" in modes:
            import ray

            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {k: env[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_CACHE")}})
            address = ray.get_runtime_context().gcs_address
            if os.environ.get("RAY_AUTH_MODE"):  # Ray's token authentication: clients must opt in explicitly
                env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
        try:
            for r in range(args.repeats):
                for ex in executors:
                    out = root / f"store-{ex}-{r}"
                    cmd = [*base, "--out", str(out), "--executor", ex.split("-")[0]]
                    if ex != "local":
                        cmd += ["--write-from", args.write_from]
                    if ex == "ray-attached":
                        cmd += ["--address", address]
                    load0 = os.getloadavg()[0]
                    wall, _ = _run(cmd, env)
                    walls[ex].append(wall)
                    runs.append(f"run {r + 1} {ex:14s}: {wall:6.1f} s  (load average before {load0:.1f}, "
                                f"after {os.getloadavg()[0]:.1f})")
                    print(runs[-1], flush=True)
                if "cold" in modes:
                    wall, _ = _run(probe, env)
                    start_stop.append(wall)
                    runs.append(f"run {r + 1} {'ray-start-stop':14s}: {wall:6.1f} s  (Ray alone: start a local "
                                "instance, one empty task per CPU, shut down)")
                    print(runs[-1], flush=True)
        finally:
            if address is not None:
                ray.shutdown()
        # every store complete; Ray's byte-identical to local's
        ref = root / "store-local-0"
        names = sorted(p.name for p in ref.glob("*.parquet"))
        expected = args.checkpoints * 2
        identical = True
        for r in range(args.repeats):
            for ex in executors:
                d = root / f"store-{ex}-{r}"
                got = sorted(p.name for p in d.glob("*.parquet"))
                if len(got) != expected or got != names:
                    raise RuntimeError(f"{d}: {len(got)} shards, expected {expected}")
                identical &= all((d / n).read_bytes() == (ref / n).read_bytes() for n in names)
        rows = len(store.read(ref))
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratios = {ex: med[ex] / med["local"] for ex in executors if ex != "local"}
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # pragma: no cover
        ray_version = "not installed"
    import torch

    lines = [
        "# capscale bench ray_executor",
        f"# command: capscale bench ray_executor --checkpoints {args.checkpoints} --items {args.items} "
        f"--repeats {args.repeats} --write-from {args.write_from} --modes {','.join(modes)}",
        f"# machine: {platform.machine()} cores={os.cpu_count()} python={platform.python_version()} "
        f"torch={torch.__version__} ray={ray_version}; shared machine, load average shown per run",
        f"# setup: {args.checkpoints} tiny random-init GPT-NeoX checkpoints (2 layers, hidden 32) x 2 tasks x "
        f"{args.items} items x 4 choices = {rows} store rows; each run a fresh `capscale eval` process "
        "(ray-cold: starts a local Ray instance with all cores, Ray start-up in the wall time; ray-attached: "
        "--address of a Ray instance started once beforehand, as on a cluster)",
        *runs,
        "median wall: " + ", ".join(f"{ex} {med[ex]:.1f} s" for ex in executors),
        *[f"{ex}/local = {q:.2f}; target (<= 1.5x local): {'met' if q <= 1.5 else 'NOT met'}"
          for ex, q in ratios.items()],
        *([f"ray-start-stop median {statistics.median(start_stop):.1f} s; ray-cold minus it = "
           f"{med['ray-cold'] - statistics.median(start_stop):.1f} s = "
           f"{(med['ray-cold'] - statistics.median(start_stop)) / med['local']:.2f}x local"] if start_stop else []),
        f"stores complete ({expected} shards each); ray stores byte-identical to local: {identical}",
    ]
    emit_report(lines, args.out)
    return 0 if identical else 1


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))

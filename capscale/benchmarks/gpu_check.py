"""GPU check of the scoring engine: capscale vs lm-eval HFLM on Pythia-1.4B- and 6.9B-shaped models in bfloat16.

Run by ``results/bench/gpu_check.sh`` (within about 8 minutes on one GPU, no network). For each model shape
(random-initialised from configs, built in place on the GPU: weights do not change throughput) and each task
(MMLU 5-shot with lm-eval's prompt and ``first_n`` dev exemplars over a fixed list of subjects; ARC-Easy
0-shot), both engines score the same requests in one process, alternating, and the check reports:

* items/s of both and their ratio (median of the rounds);
* tokens fed by capscale, the tokens it would feed without prefix reuse, and HFLM's tokens;
* achieved model FLOP/s on capscale's fed tokens (2 x non-embedding parameters per token, plus the output
  head at continuation positions) and MFU against the GPU's dense bfloat16 peak when it is known;
* parity in bfloat16: the share of items whose argmax (acc decision) agrees, the share of choices whose
  ``is_greedy`` agrees, max and median |delta loglik|;
* peak GPU memory of each engine (``torch.cuda.max_memory_allocated``);
* which scaled-dot-product-attention kernels accept the packed rows (each tried alone on one batch) and
  capscale's throughput with the memory-efficient kernel only vs PyTorch's choice.

``--smoke`` runs the same code on the CPU with tiny shapes and a few items in float32 (seconds), so that the
script is tested in CI and cannot rot. Results are appended to ``--out`` as they come (a killed run keeps its
finished parts) and written as JSON beside it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from capscale.errors import UsageError

MMLU_GPU_SUBJECTS = ("abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
                     "college_biology", "college_chemistry", "college_computer_science")

#: Dense bfloat16 peak FLOP/s (no sparsity) by GPU name fragment; MFU is reported only for these.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny models, a few items, float32: checks the script end to end in seconds")
    p.add_argument("--data-dir", default=os.environ.get("CAPSCALE_DATA"),
                   help="the mc/ folder of multiple-choice items (default $CAPSCALE_DATA)")
    p.add_argument("--models", default=None,
                   help="comma-separated shapes (default pythia-1.4b,pythia-6.9b; smoke: pythia-tiny,llama-tiny)")
    p.add_argument("--mmlu-items", type=int, default=None, help="items per MMLU subject (default 40; smoke 3)")
    p.add_argument("--arc-items", type=int, default=None, help="ARC-Easy 0-shot items (default 500; smoke 6)")
    p.add_argument("--subjects", default=None,
                   help="MMLU subjects (default: eight fixed subjects, see MMLU_GPU_SUBJECTS; smoke: two)")
    p.add_argument("--repeats", type=int, default=None, help="alternating rounds per engine (default 2; smoke 1)")
    p.add_argument("--lm-eval-batch-size", default=None, help="HFLM batch size (default 32; smoke 8)")
    p.add_argument("--out", default=None, help="report file (.txt; a .json is written beside it)")


class _Report:
    """Lines printed and appended to the output file as they come (a killed run keeps what it finished)."""

    def __init__(self, out: str | None) -> None:
        self.path = Path(out) if out else None
        self.lines: list[str] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _parity(docs: list[dict[str, Any]], a: list[Any], b: list[Any]) -> dict[str, float]:
    import numpy as np

    d = np.array([abs(x.loglik - y.loglik) for x, y in zip(a, b)])
    agree = 0
    for doc in docs:
        ia = int(np.argmax([a[j].loglik for j in doc["request_ids"]]))
        ib = int(np.argmax([b[j].loglik for j in doc["request_ids"]]))
        agree += ia == ib
    return {"max_abs_diff": float(d.max()), "median_abs_diff": float(np.median(d)),
            "argmax_agree": agree / len(docs),
            "is_greedy_agree": float(np.mean([x.is_greedy == y.is_greedy for x, y in zip(a, b)]))}


def _kernels(model: Any, tok: Any, reqs: list[Any], device: str) -> dict[str, str]:
    """Which SDPA backends run the packed rows (each tried alone on the first 16 requests)."""
    from capscale.eval import scoring

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        return {"note": "torch.nn.attention.sdpa_kernel unavailable"}
    out: dict[str, str] = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        be = getattr(SDPBackend, name, None)
        if be is None:
            continue
        try:
            with sdpa_kernel([be]):
                scoring.score_requests(model, tok, reqs[:16], progress=False)
            out[name] = "ok"
        except Exception as e:  # noqa: BLE001 - a backend that refuses the mask is the finding
            out[name] = f"refused ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
    return out


def _one(model: Any, tok: Any, name: str, task: str, docs: list[dict[str, Any]], reqs: list[Any],
         args: argparse.Namespace, device: str, rep: _Report) -> dict[str, Any]:
    import torch

    from capscale.benchmarks.scoring import _body_flops_per_token, _hflm_tokens, accuracies
    from capscale.eval import scoring

    lbs = args.lm_eval_batch_size
    t_cap: list[float] = []
    t_ref: list[float] = []
    mem: dict[str, float | None] = {}
    stats: dict[str, Any] = {}
    ours = ref = None
    scoring.score_requests(model, tok, reqs[:8], progress=False)  # warm-up (kernels, the one-time checks)
    for _ in range(args.repeats):
        for which in ("capscale", "lm-eval"):
            _peak_reset(device)
            _sync(device)
            t0 = time.perf_counter()
            if which == "capscale":
                ours = scoring.score_requests(model, tok, reqs, progress=False, stats=stats)
            else:
                ref = scoring.score_requests_lm_eval(model, tok, reqs, batch_size=lbs, device=device)
            _sync(device)
            (t_cap if which == "capscale" else t_ref).append(time.perf_counter() - t0)
            mem[which] = _peak(device)
    assert ours is not None and ref is not None
    tc, tr = statistics.median(t_cap), statistics.median(t_ref)
    n = len(docs)
    head = 2.0 * model.get_output_embeddings().weight.numel() * sum(x.n_tokens for x in ours)
    flops = (_body_flops_per_token(model) * stats["unique_tokens"] + head) / tc
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    res: dict[str, Any] = {
        "model": name, "task": task, "items": n, "requests": len(reqs),
        "capscale_s": t_cap, "lm_eval_s": t_ref, "capscale_items_per_s": n / tc, "lm_eval_items_per_s": n / tr,
        "ratio": statistics.median([r / c for c, r in zip(t_cap, t_ref)]),
        "capscale_tokens_fed": stats["unique_tokens"], "capscale_tokens_without_prefix_reuse": stats["context_tokens"],
        "n_prefixes": stats["n_prefixes"], "prefix_tokens": stats["prefix_tokens"],
        "lm_eval_tokens_fed_approx": _hflm_tokens(scoring.encode_requests(tok, reqs), [r.context for r in reqs]),
        "token_budget": stats["token_budget"], "n_batches": stats["n_batches"],
        "model_flops_per_s": flops, "mfu_bf16_dense_peak": flops / peak if peak else None,
        "peak_mem_gib_capscale": mem.get("capscale"), "peak_mem_gib_lm_eval": mem.get("lm-eval"),
        "acc_capscale": accuracies(docs, ours), "acc_lm_eval": accuracies(docs, ref),
        **_parity(docs, ours, ref),
    }
    rep(f"{name:12s} {task:16s} {n:5d} items  capscale {res['capscale_items_per_s']:8.2f} it/s   HFLM "
        f"{res['lm_eval_items_per_s']:8.2f} it/s   ratio {res['ratio']:5.2f}x")
    rep(f"{'':12s} tokens fed: capscale {res['capscale_tokens_fed']:,} ({res['n_prefixes']} shared prefixes, "
        f"{res['capscale_tokens_without_prefix_reuse']:,} without reuse), HFLM ~{res['lm_eval_tokens_fed_approx']:,}; "
        f"token budget {res['token_budget']}, {res['n_batches']} batches")
    rep(f"{'':12s} model FLOP/s on fed tokens {flops:.3e}"
        + (f", MFU {res['mfu_bf16_dense_peak']:.3f} of {peak:.3g} (dense bf16)" if peak else "")
        + (f"; peak memory capscale {mem['capscale']:.2f} GiB, HFLM {mem['lm-eval']:.2f} GiB"
           if mem.get("capscale") is not None else ""))
    rep(f"{'':12s} parity: argmax agrees on {res['argmax_agree']:.4f} of items, is_greedy on "
        f"{res['is_greedy_agree']:.4f} of choices, max |dloglik| {res['max_abs_diff']:.3g}, median "
        f"{res['median_abs_diff']:.3g} nats; acc capscale {res['acc_capscale'][0]:.4f} HFLM {res['acc_lm_eval'][0]:.4f}")
    return res


def run(args: argparse.Namespace) -> int:
    import torch

    from capscale.benchmarks.scoring import SHAPES, load_task, matmul_flops, random_model, train_bpe_tokenizer
    from capscale.eval import scoring

    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    dtype = "float32" if smoke else "bfloat16"
    if not smoke and not torch.cuda.is_available():
        raise UsageError("no CUDA device: run the GPU check on a GPU machine, or pass --smoke to check it on CPU")
    if not args.data_dir:
        raise UsageError("--data-dir (or $CAPSCALE_DATA) is required: the mc/ folder of multiple-choice items")
    models = (args.models or ("pythia-tiny,llama-tiny" if smoke else "pythia-1.4b,pythia-6.9b")).split(",")
    for m in models:
        if m not in SHAPES:
            raise UsageError(f"unknown model shape {m!r}; choose from {', '.join(SHAPES)}")
    subjects = (args.subjects.split(",") if args.subjects
                else list(MMLU_GPU_SUBJECTS[:2] if smoke else MMLU_GPU_SUBJECTS))
    args.mmlu_items = args.mmlu_items or (3 if smoke else 40)
    args.arc_items = args.arc_items or (6 if smoke else 500)
    args.repeats = args.repeats or (1 if smoke else 2)
    args.lm_eval_batch_size = int(args.lm_eval_batch_size or (8 if smoke else 32))
    rep = _Report(args.out)
    t_all = time.perf_counter()
    rep("# capscale bench gpu-check" + (" --smoke" if smoke else ""))
    rep(f"# {platform.node() or 'machine'}: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
           if device == "cuda" else ", CPU only"))
    tasks = {
        "mmlu_5shot": load_task(args.data_dir, "mmlu", limit=args.mmlu_items, num_fewshot=5, subjects=subjects),
        "arc_easy_0shot": load_task(args.data_dir, "arc_easy", limit=args.arc_items),
    }
    texts = [r.context + r.continuation for _, reqs in tasks.values() for r in reqs]
    tok = train_bpe_tokenizer(texts, vocab_size=8000)
    rep(f"# tasks: MMLU 5-shot (lm-eval prompt, first_n dev shots) {len(subjects)} subjects x {args.mmlu_items} items; "
        f"ARC-Easy 0-shot {args.arc_items} items; tokenizer: byte-level BPE (8,000) trained on the task text")
    rep(f"# {dtype} on {device}; HFLM batch {args.lm_eval_batch_size}, softmax float32; capscale batch auto; "
        f"{args.repeats} alternating round(s)")
    roof = matmul_flops(dtype, device, n=4096 if device == "cuda" else 512)
    rep(f"# matmul roofline: {roof / 1e12:.3f} TFLOP/s ({dtype}, measured)")
    results: list[dict[str, Any]] = []
    for name in models:
        t0 = time.perf_counter()
        model = random_model(name, dtype=dtype, device=device, vocab_size=max(SHAPES[name]["vocab_size"], len(tok)))
        n_params = sum(p.numel() for p in model.parameters())
        rep("")
        rep(f"## {name}: {n_params / 1e9:.2f}B parameters, built in {time.perf_counter() - t0:.1f} s")
        docs, reqs = tasks["mmlu_5shot"]
        k = _kernels(model, tok, reqs, device)
        rep(f"{'':12s} SDPA kernels on the packed rows: " + ", ".join(f"{a}: {b}" for a, b in k.items()))
        if device == "cuda" and k.get("EFFICIENT_ATTENTION") == "ok":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            for label, ctx in (("PyTorch's choice", None), ("memory-efficient only", [SDPBackend.EFFICIENT_ATTENTION])):
                _sync(device)
                t1 = time.perf_counter()
                if ctx is None:
                    scoring.score_requests(model, tok, reqs, progress=False)
                else:
                    with sdpa_kernel(ctx):
                        scoring.score_requests(model, tok, reqs, progress=False)
                _sync(device)
                rep(f"{'':12s} capscale MMLU with {label}: {len(docs) / (time.perf_counter() - t1):.2f} items/s")
        for task, (docs, reqs) in tasks.items():
            results.append(_one(model, tok, name, task, docs, reqs, args, device, rep))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    rep("")
    rep(f"# total {time.perf_counter() - t_all:.0f} s")
    if args.out:
        js = Path(args.out).with_suffix(".json")
        tmp = js.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"smoke": smoke, "device": device, "dtype": dtype, "results": results},
                                  indent=2, default=str) + "\n")
        tmp.replace(js)
    return 0

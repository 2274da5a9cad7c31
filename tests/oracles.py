"""Independent reference implementations that tests check capscale's code against.

:func:`simple_score_items` is a small self-contained scorer (no shared prefix, no packing, no head-only
path): the oracle of the scoring engine :func:`capscale.eval.scoring.score_requests` on the synthetic
ladder's word-level tokenizer (the lm-eval HFLM parity tests in ``test_scoring.py`` cover BPE tokenizers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd


def simple_score_items(model: Any, tokenizer: Any, items: pd.DataFrame, *, batch_size: int = 64) -> pd.DataFrame:
    """Per-choice log-likelihoods (nats) of ``" " + choice`` after ``context`` for one checkpoint.

    lm-eval conventions: context and continuation encoded together, continuation tokens = the tail after the
    context's tokens, no BOS, summed log softmax over the full vocabulary; ``is_greedy`` = every continuation
    token is the argmax.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its tokenizer (with a pad token).
    items : pandas.DataFrame
        ``doc_id, context, choices, gold`` (``gold`` one index).
    batch_size : int
        Requests (one per choice, right-padded) per forward pass.

    Returns
    -------
    pandas.DataFrame
        One row per (doc_id, choice_idx) with ``is_correct, loglik, is_greedy, n_tokens, n_chars, n_bytes``.
    """
    import torch

    reqs = []
    for it in items.itertuples(index=False):
        ctx = tokenizer(it.context, add_special_tokens=False)["input_ids"]
        for ci, ch in enumerate(it.choices):
            full = tokenizer(it.context + " " + ch, add_special_tokens=False)["input_ids"]
            if full[: len(ctx)] != ctx or len(full) == len(ctx):
                raise ValueError(f"doc_id {it.doc_id}: continuation {ch!r} does not tokenize after the context")
            reqs.append((it.doc_id, ci, ci == it.gold, full, len(ctx), ch))
    rows = []
    model.eval()
    with torch.no_grad():
        for b in range(0, len(reqs), batch_size):
            chunk = reqs[b: b + batch_size]
            width = max(len(r[3]) for r in chunk)
            ids = torch.full((len(chunk), width), int(tokenizer.pad_token_id))
            for i, r in enumerate(chunk):
                ids[i, : len(r[3])] = torch.tensor(r[3])
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
            for i, (doc, ci, corr, full, nctx, ch) in enumerate(chunk):
                tgt = torch.tensor(full[nctx:])
                lp = logp[i, nctx - 1: len(full) - 1]
                ll = float(lp.gather(1, tgt[:, None]).sum())
                greedy = bool((lp.argmax(-1) == tgt).all())
                rows.append(dict(doc_id=doc, choice_idx=ci, is_correct=corr, loglik=ll, is_greedy=greedy,
                                 n_tokens=len(tgt), n_chars=len(ch), n_bytes=len(ch.encode())))
    return pd.DataFrame(rows)


def simple_score_family(spec_path: str | os.PathLike, *, threads: int = 1) -> pd.DataFrame:
    """:func:`simple_score_items` for every checkpoint of a ladder family on its synthetic tasks (float32).

    Returns
    -------
    pandas.DataFrame
        ``model_id, task`` plus the columns of :func:`simple_score_items`.
    """
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from capscale.synthetic import ladder
    from capscale.synthetic import world as synthetic

    spec = ladder.read_family(spec_path)
    base = Path(spec_path) if Path(spec_path).is_dir() else Path(spec_path).parent
    tasks = synthetic.load_tasks(base / spec.get("tasks_dir", "tasks"))
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    frames = []
    try:
        for c in spec["checkpoints"]:
            tok = PreTrainedTokenizerFast.from_pretrained(c["abs_path"])
            model = AutoModelForCausalLM.from_pretrained(c["abs_path"], dtype=torch.float32)
            for task, items in tasks.items():
                s = simple_score_items(model, tok, items)
                s.insert(0, "task", task)
                s.insert(0, "model_id", c["model_id"])
                frames.append(s)
    finally:
        torch.set_num_threads(prev)
    return pd.concat(frames, ignore_index=True)

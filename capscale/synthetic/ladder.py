"""Train a ladder of small Llama-style language models on the synthetic world, on CPU.

:func:`train_ladder` generates the world (:mod:`capscale.synthetic.world`), trains one word-level
tokenizer on its corpus, trains every size of the ladder for one epoch over the same token stream
(same order for every size), saves HF-format checkpoints (fp16 safetensors, tokenizer in every
folder) on a log-spaced step schedule, and writes a family spec::

    family: capscale-synth
    params_kind: non_embedding      # params = parameters outside the token embedding (tied output)
    checkpoints:
      - {path: s0/step00010, params: 49504, tokens: 10240, step: 10, model_id: capscale-synth-s0-step00010}

``tokens`` = training tokens seen at that checkpoint (``step * batch_size * seq_len``); compute is
left to the evaluator (``6 * params * tokens`` FLOPs).

Everything is deterministic for a given seed and thread count (``torch.set_num_threads``).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from capscale._io import atomic_write_dir, atomic_write_text
from capscale.analysis import chain
from capscale.data.select import final_checkpoints
from capscale.errors import InputError, UsageError
from capscale.eval.evaluate import evaluate_item_sets
from capscale.eval.shards import EvalOptions
from capscale.synthetic import world as synthetic

__all__ = [
    "SIZES",
    "longest_increasing",
    "QUICK_SIZES",
    "LadderConfig",
    "build_tokenizer",
    "encode_corpus",
    "checkpoint_steps",
    "make_model",
    "non_embedding_params",
    "shape_params",
    "train_ladder",
    "read_family",
    "export_family",
    "evaluate_family",
    "check_targets",
    "format_checks",
]

FAMILY = "capscale-synth"
SPEC_NAME = "family.yaml"
SPECIALS = ["<unk>", "<pad>", "<eos>"]

#: Model shapes: name -> (hidden size d, layers L, heads, MLP width), in order of size. Non-embedding
#: parameters of a Llama block = 4 d^2 (attention) + 3 d * ff (gated MLP) + 2 d (norms). s0-s4 are the
#: first ladder (about 3x apart); s0m ("minus") sits half a step below s0 and s0p-s3p ("plus") half a step
#: above s0-s3, so that consecutive sizes are 1.56x-1.90x apart.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "s0m": (24, 3, 2, 96),  # 27.8K
    "s0": (32, 3, 2, 128),  # 49.4K
    "s0p": (36, 4, 3, 144),  # 83.3K
    "s1": (48, 4, 3, 192),  # 148K
    "s1p": (64, 4, 4, 256),  # 263K
    "s2": (80, 4, 4, 320),  # 410K
    "s2p": (100, 4, 5, 400),  # 641K
    "s3": (128, 4, 4, 512),  # 1.05M
    "s3p": (144, 6, 4, 576),  # 1.99M
    "s4": (160, 8, 5, 640),  # 3.28M
}
#: A tiny ladder for tests and ``--quick``.
QUICK_SIZES: dict[str, tuple[int, int, int, int]] = {
    "q0": (16, 1, 2, 32),
    "q1": (24, 2, 2, 64),
}
#: Initialisation-seed offsets of the canonical sizes: a name's index here. Sizes added later are appended,
#: so the checkpoints of the sizes that existed before do not change.
_SEED_ORDER: tuple[str, ...] = ("s0", "s1", "s2", "s3", "s4", "q0", "q1", "s0m", "s0p", "s1p", "s2p", "s3p")
#: Peak learning rate per hidden size (smaller models tolerate larger rates).
def _peak_lr(d: int) -> float:
    return float(min(5e-3, 3e-3 * (64 / d) ** 0.5))


@dataclass
class LadderConfig:
    """Training settings shared by every size of the ladder.

    Attributes
    ----------
    sizes : dict
        name -> (d, L, heads, ff); see :data:`SIZES`.
    world : synthetic.WorldConfig
        The world to generate (corpus and tasks).
    seq_len, batch_size : int
        Tokens per sequence and sequences per optimiser step (the stream is packed, documents
        separated by ``<eos>``); one step = ``seq_len * batch_size`` training tokens.
    n_checkpoints : int
        Checkpoints per size, log-spaced in steps from ``total_steps / 2**(n-1)`` to the last step.
    epochs : float
        Passes over the corpus.
    warmup_frac, min_lr_frac, weight_decay : float
        Linear warm-up fraction, cosine floor as a fraction of the peak, AdamW weight decay.
    seed : int
        Seeds the world, the data order and the initialisation.
    threads : int
        ``torch.set_num_threads``.
    """

    sizes: dict[str, tuple[int, int, int, int]] = field(default_factory=lambda: dict(SIZES))
    world: synthetic.WorldConfig = field(default_factory=synthetic.WorldConfig)
    seq_len: int = 64
    batch_size: int = 16
    n_checkpoints: int = 7
    epochs: float = 1.0
    warmup_frac: float = 0.03
    min_lr_frac: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message for settings that cannot produce a ladder."""
        self.world.validate()
        if not self.sizes:
            raise UsageError("LadderConfig.sizes is empty")
        for name, shape in self.sizes.items():
            if len(shape) != 4 or any(int(x) < 1 for x in shape):
                raise UsageError(f"size {name!r}: shape must be 4 positive ints (d, L, heads, ff), got {shape}")
            d, _, h, _ = shape
            if d % h or (d // h) % 2:
                raise UsageError(f"size {name!r}: hidden size {d} must split into {h} heads of even width")
        if self.n_checkpoints < 1:
            raise UsageError("LadderConfig.n_checkpoints must be >= 1")
        if self.seq_len < 8 or self.batch_size < 1:
            raise UsageError("LadderConfig: seq_len must be >= 8 and batch_size >= 1")


def build_tokenizer(lines: Sequence[str]):
    """A word-level ``PreTrainedTokenizerFast`` over the corpus words (deterministic vocabulary order).

    Pre-tokenisation splits on whitespace and punctuation; ids 0-2 are ``<unk>``, ``<pad>``,
    ``<eos>`` (also the BOS token). No special tokens are added when encoding.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words = sorted({w for line in lines for w, _ in pre.pre_tokenize_str(line)})
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<eos>", model_max_length=1024)


def encode_corpus(lines: Sequence[str], tokenizer) -> np.ndarray:
    """One int32 token stream: ``<eos> doc_1 <eos> doc_2 <eos> ...`` in corpus order."""
    eos = tokenizer.convert_tokens_to_ids("<eos>")
    enc = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    out = [eos]
    for ids in enc:
        out.extend(ids)
        out.append(eos)
    return np.asarray(out, dtype=np.int32)


def checkpoint_steps(total_steps: int, n: int) -> list[int]:
    """``n`` log-spaced steps ending at ``total_steps`` (halving back from it), unique and >= 1.

    >>> checkpoint_steps(640, 7)
    [10, 20, 40, 80, 160, 320, 640]
    """
    if total_steps < n:
        raise InputError(f"{total_steps} training steps cannot hold {n} distinct checkpoints")
    steps = sorted({max(1, int(round(total_steps / 2 ** k))) for k in range(n)})
    k = n
    while len(steps) < n:  # collisions at the low end: fill with the smallest unused steps
        steps = sorted(set(steps) | {k})
        k += 1
    return steps


def make_model(shape: tuple[int, int, int, int], vocab_size: int, seq_len: int, seed: int):
    """A freshly initialised ``LlamaForCausalLM`` (tied embeddings) for ``shape = (d, L, heads, ff)``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d, n_layers, heads, ff = (int(x) for x in shape)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=ff, num_hidden_layers=n_layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max(256, seq_len),
                      tie_word_embeddings=True, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                      initializer_range=0.02, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def shape_params(shape: tuple[int, int, int, int]) -> int:
    """Non-embedding parameters of a Llama model of ``shape = (d, L, heads, ff)``:
    ``L * (4 d^2 + 3 d ff + 2 d) + d`` (attention, gated MLP, two RMSNorms per block, final norm)."""
    d, n_layers, _, ff = (int(x) for x in shape)
    return n_layers * (4 * d * d + 3 * d * ff + 2 * d) + d


def non_embedding_params(model) -> int:
    """Parameters outside the (tied) token embedding / output matrix."""
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # parameters() counts a tied matrix once
    return int(total - emb.numel())


def _init_seed(cfg: LadderConfig, name: str, position: int) -> int:
    """Initialisation seed of a size: ``seed * 1000 + index`` in :data:`_SEED_ORDER` when the name and shape
    are those of :data:`SIZES` or :data:`QUICK_SIZES`, else its position in ``cfg.sizes``. So training a
    subset (``--sizes s4``) gives bit-identical models to training the whole ladder."""
    known = {**SIZES, **QUICK_SIZES}
    if name in known and tuple(known[name]) == tuple(cfg.sizes[name]):
        return cfg.seed * 1000 + _SEED_ORDER.index(name)
    return cfg.seed * 1000 + position


def _lr_at(step: int, total: int, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _save_checkpoint(model, tokenizer, path: Path) -> None:
    """fp16 safetensors + config + tokenizer, written to a temporary folder then renamed."""
    import torch

    m16 = copy.deepcopy(model).to(torch.float16)

    def write(tmp: str) -> None:
        m16.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    atomic_write_dir(path, write)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise PermissionError(f"cannot write to output folder {out}: {e}") from e


def _min_tokens_needed(cfg: LadderConfig) -> int:
    return cfg.seq_len * cfg.batch_size * 4 * cfg.n_checkpoints


def train_ladder(out: str | os.PathLike, config: LadderConfig | None = None, *,
                 log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Generate the world, train every size and write checkpoints plus ``family.yaml`` under ``out``.

    Layout: ``out/world/`` (corpus, ground truth, ``tasks/``), ``out/<size>/stepNNNNN/`` (HF
    checkpoints, fp16), ``out/family.yaml``, ``out/train_log.csv`` (step, size, lr, loss in nats
    per token, seconds).

    Raises
    ------
    ValueError
        Before any training, when the world is too small to fill the checkpoint schedule (fewer than
        ``4 * n_checkpoints`` steps) or a setting is invalid.
    PermissionError
        Before any training, when ``out`` cannot be written.
    """
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cfg = config or LadderConfig()
    cfg.validate()
    out = Path(out)
    _check_writable(out)

    world = synthetic.generate_world(cfg.world)
    lines = synthetic.corpus_lines(world)
    tokenizer = build_tokenizer(lines)
    stream = encode_corpus(lines, tokenizer)
    per_step = cfg.seq_len * cfg.batch_size
    n_seq = (len(stream) - 1) // cfg.seq_len
    total_steps = int(n_seq * cfg.epochs) // cfg.batch_size
    if total_steps * per_step < _min_tokens_needed(cfg):
        raise InputError(
            f"world too small: its corpus has {len(stream)} tokens, enough for {total_steps} steps of "
            f"{per_step} tokens, but {cfg.n_checkpoints} log-spaced checkpoints need at least "
            f"{4 * cfg.n_checkpoints} steps; raise WorldConfig.n_people or exposures (now "
            f"{cfg.world.n_people}, {cfg.world.exposures})")
    steps = checkpoint_steps(total_steps, cfg.n_checkpoints)
    synthetic.write_world(world, out / "world")
    log(f"world: {cfg.world.n_people} people, corpus {len(stream)} tokens, vocab {len(tokenizer)}; "
        f"{total_steps} steps of {per_step} tokens per size; checkpoints at {steps}")

    # the same sequence order for every size
    rng = np.random.default_rng([cfg.seed, 3])
    seqs = np.concatenate([rng.permutation(n_seq) for _ in range(int(math.ceil(cfg.epochs)))])
    windows = torch.from_numpy(stream[: n_seq * cfg.seq_len + 1].astype(np.int64))

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    ckpts: list[dict] = []
    log_rows: list[dict] = []
    try:
        for si, (name, shape) in enumerate(cfg.sizes.items()):
            model = make_model(shape, len(tokenizer), cfg.seq_len, seed=_init_seed(cfg, name, si))
            n_params = non_embedding_params(model)
            peak = _peak_lr(shape[0])
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
            no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                     {"params": no_decay, "weight_decay": 0.0}],
                                    lr=peak, betas=(0.9, 0.95), eps=1e-8)
            warmup = max(1, int(cfg.warmup_frac * total_steps))
            log(f"[{name}] d={shape[0]} L={shape[1]} heads={shape[2]} ff={shape[3]}: "
                f"{n_params} non-embedding params, peak lr {peak:.2e}")
            model.train()
            t0 = time.time()
            save_at = set(steps)
            for step in range(1, total_steps + 1):
                idx = seqs[(step - 1) * cfg.batch_size: step * cfg.batch_size]
                starts = torch.from_numpy(idx.astype(np.int64) * cfg.seq_len)
                batch = windows[starts[:, None] + torch.arange(cfg.seq_len + 1)[None, :]]
                lr = _lr_at(step - 1, total_steps, peak, warmup, cfg.min_lr_frac)
                for g in opt.param_groups:
                    g["lr"] = lr
                logits = model(input_ids=batch[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         batch[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if step % 25 == 0 or step in save_at:
                    log_rows.append(dict(size=name, step=step, lr=lr, loss=float(loss.detach()), seconds=time.time() - t0))
                if step in save_at:
                    rel = f"{name}/step{step:05d}"
                    (out / name).mkdir(parents=True, exist_ok=True)
                    _save_checkpoint(model, tokenizer, out / rel)
                    ckpts.append(dict(path=rel, params=n_params, tokens=int(step * per_step), step=int(step),
                                      model_id=f"{FAMILY}-{name}-step{step:05d}", seed=cfg.seed))
                    log(f"[{name}] step {step}/{total_steps} loss {float(loss.detach()):.3f} "
                        f"({time.time() - t0:.0f} s) -> {rel}")
    finally:
        torch.set_num_threads(prev_threads)

    log_path = out / "train_log.csv"
    logs = pd.DataFrame(log_rows)
    if log_path.exists():  # keep the log rows of other sizes trained into the same folder
        old = pd.read_csv(log_path)
        logs = pd.concat([old[~old["size"].isin(list(cfg.sizes))], logs], ignore_index=True)
    logs.to_csv(log_path, index=False)
    spec = _spec_dict(cfg, ckpts)
    _write_yaml(out / SPEC_NAME, spec)
    log(f"wrote {len(ckpts)} checkpoints and {out / SPEC_NAME}")
    return out / SPEC_NAME


def _spec_dict(cfg: LadderConfig, ckpts: list[dict]) -> dict:
    return {
        "family": FAMILY,
        "params_kind": "non_embedding",
        "tokens_per_step": cfg.seq_len * cfg.batch_size,
        "seed": cfg.seed,
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("world",)},
        "world": asdict(cfg.world),
        "tasks_dir": "world/tasks",
        "checkpoints": ckpts,
    }


def rebuild_spec(out: str | os.PathLike, config: LadderConfig | None = None) -> Path:
    """Write ``out/family.yaml`` from the checkpoint folders ``out/<size>/stepNNNNN`` of ``config``'s sizes.

    For ladders whose sizes were trained by separate processes into the same folder
    (``--sizes s0 s1 s2 s3`` and ``--sizes s4``: each size's initialisation and data order depend
    only on the seed and the size, so the checkpoints equal those of one sequential run).
    Raises ``FileNotFoundError`` naming the size when a size has no checkpoint.
    """
    cfg = config or LadderConfig()
    out = Path(out)
    per_step = cfg.seq_len * cfg.batch_size
    ckpts = []
    for name, shape in cfg.sizes.items():
        folders = sorted((out / name).glob("step[0-9]*"))
        if not folders:
            raise FileNotFoundError(f"no checkpoints of size {name!r} under {out / name}")
        for f in folders:
            step = int(f.name[4:])
            ckpts.append(dict(path=f"{name}/{f.name}", params=shape_params(shape), tokens=step * per_step,
                              step=step, model_id=f"{FAMILY}-{name}-{f.name}", seed=cfg.seed))
    _write_yaml(out / SPEC_NAME, _spec_dict(cfg, ckpts))
    return out / SPEC_NAME


def _write_yaml(path: Path, obj: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_family(path: str | os.PathLike) -> dict:
    """Read a family spec; checkpoint paths become absolute (``abs_path``). Errors name the file/field."""
    p = Path(path)
    if p.is_dir():
        p = p / SPEC_NAME
    spec = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or "checkpoints" not in spec or "family" not in spec:
        raise InputError(f"{p}: a family spec needs 'family' and 'checkpoints'")
    for i, c in enumerate(spec["checkpoints"]):
        for key in ("path", "params", "tokens", "step", "model_id"):
            if key not in c:
                raise InputError(f"{p}: checkpoints[{i}] lacks {key!r}")
        c["abs_path"] = str((p.parent / c["path"]).resolve())
    return spec


def _dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def export_family(src: str | os.PathLike, dest: str | os.PathLike, *, max_bytes: int = 25_000_000,
                  min_per_size: int = 6) -> dict:
    """Copy a trained ladder into ``dest`` within ``max_bytes``: every final checkpoint first, then
    intermediate ones (latest steps first, all sizes at a step together when they fit, else the
    smaller sizes), plus ``family.yaml``, ``tokenizer/`` and ``tasks/``.

    Returns the new spec. Raises ``ValueError`` if the finals alone exceed ``max_bytes``.
    """
    spec = read_family(src)
    src_dir = Path(src) if Path(src).is_dir() else Path(src).parent
    dest = Path(dest)
    _check_writable(dest)
    by_size: dict[str, list[dict]] = {}
    for c in spec["checkpoints"]:
        by_size.setdefault(c["path"].split("/")[0], []).append(c)
    sizes = {c["path"]: _dir_bytes(Path(c["abs_path"])) for c in spec["checkpoints"]}
    chosen = [max(cs, key=lambda c: c["step"]) for cs in by_size.values()]
    used = sum(sizes[c["path"]] for c in chosen) + 200_000  # margin for tokenizer, tasks, yaml
    if used > max_bytes:
        raise InputError(f"final checkpoints alone need {used} bytes > {max_bytes}")
    rest = sorted((c for c in spec["checkpoints"] if c not in chosen), key=lambda c: (-c["step"], c["params"]))
    for c in rest:
        if used + sizes[c["path"]] <= max_bytes:
            chosen.append(c)
            used += sizes[c["path"]]
    chosen.sort(key=lambda c: (c["params"], c["step"]))
    dest.mkdir(parents=True, exist_ok=True)
    for c in chosen:
        target = dest / c["path"]
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(c["abs_path"], target)
    if (src_dir / spec.get("tasks_dir", "world/tasks")).is_dir():
        shutil.copytree(src_dir / spec.get("tasks_dir", "world/tasks"), dest / "tasks", dirs_exist_ok=True)
    new = {k: v for k, v in spec.items() if k != "checkpoints"}
    new["tasks_dir"] = "tasks"
    new["checkpoints"] = [{k: v for k, v in c.items() if k != "abs_path"} for c in chosen]
    _write_yaml(dest / SPEC_NAME, new)
    return new


def evaluate_family(spec_path: str | os.PathLike, tasks_dir: str | os.PathLike | None = None, *,
                    threads: int = 1, options: EvalOptions | None = None) -> pd.DataFrame:
    """Score every checkpoint of a family on the synthetic tasks; returns score store rows.

    Scores through the evaluation stage's items -> rows loop
    (:func:`capscale.eval.evaluate.evaluate_item_sets`, i.e. :func:`capscale.eval.scoring.score_requests`),
    loading each checkpoint once; nothing is written.

    Parameters
    ----------
    spec_path : path-like
        ``family.yaml`` (or its folder).
    tasks_dir : path-like, optional
        Folder of ``<task>.jsonl``; default the spec's ``tasks_dir``.
    threads : int
        ``torch.set_num_threads`` while scoring (float32 sums depend on it).
    options : EvalOptions, optional
        Default: float32 on CPU, ``batch_size="auto"``, no progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per checkpoint x task x item x choice in the store schema (``loglik`` in nats,
        ``task_source`` ``"synthetic"``).

    Raises
    ------
    ValueError
        The spec lacks a field (the message names the file and the checkpoint).
    FileNotFoundError
        No task files, or a checkpoint folder is missing.
    """
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    p = Path(spec_path)
    spec_file = p / SPEC_NAME if p.is_dir() else p
    spec = read_family(spec_file)
    tasks = synthetic.load_tasks(tasks_dir or spec_file.parent / spec.get("tasks_dir", "tasks"))
    options = options or EvalOptions(dtype="float32", batch_size="auto", progress=False)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return evaluate_item_sets(spec_file, tasks, options=options, task_source="synthetic")
    finally:
        torch.set_num_threads(prev)


def check_targets(store_df: pd.DataFrame, onehop: str = "synth_onehop", multi: str = "synth_birthdate") -> dict:
    """The demo family's acceptance checks (docs/real-data.md §6) from a score store of the family.

    Returns a dict with
    ``onehop_final_acc`` (size -> accuracy of the final checkpoint, ordered by N),
    ``onehop_increasing_sizes`` (length of the longest strictly increasing run of sizes, in size
    order, not necessarily consecutive: "accuracy increases across k of the sizes"), ``onehop_largest_acc``,
    ``median_spearman`` (task -> metric -> median per-item Spearman ρ with log10 compute over all
    checkpoints; metrics log_p_vocab_correct, p_choices_correct, acc),
    ``ordering_tasks`` (tasks where log p_vocab > p_choices > acc in median ρ), and
    ``multi_curve`` (one row per checkpoint of the multi-token task: compute, exact match = mean
    target_is_greedy, acc, mean log p_vocab(correct) in nats), and ``final_acc`` (params x task
    accuracy of each size's final checkpoint).
    """
    from scipy import stats

    items = chain.compute(store_df)
    finals = final_checkpoints(items, by="params")
    oh = finals[finals["task"] == onehop].groupby("params")["acc"].mean().sort_index()
    inc = longest_increasing(oh.to_numpy())
    med: dict[str, dict[str, float]] = {}
    for task, g in items.groupby("task"):
        med[task] = {}
        for m in ("log_p_vocab_correct", "p_choices_correct", "acc"):
            Y = g.pivot(index="model_id", columns="doc_id", values=m)
            x = np.log10(g.groupby("model_id")["compute"].first().reindex(Y.index).to_numpy(dtype=float))
            rs = []
            for col in Y.columns:
                y = Y[col].to_numpy(dtype=float)
                rs.append(np.nan if np.ptp(y) == 0 else stats.spearmanr(x, y).statistic)
            med[task][m] = float(np.nanmedian(rs))
    order = [t for t, v in med.items()
             if v["log_p_vocab_correct"] > v["p_choices_correct"] > v["acc"]]
    mt = items[items["task"] == multi]
    curve = (mt.groupby(["model_id"]).agg(params=("params", "first"), step=("step", "first"),
                                           compute=("compute", "first"), exact_match=("target_is_greedy", "mean"),
                                           acc=("acc", "mean"), log_p_vocab_correct=("log_p_vocab_correct", "mean"))
             .sort_values("compute").reset_index())
    final_acc = finals.pivot_table(index="params", columns="task", values="acc", aggfunc="mean").sort_index()
    return dict(onehop_final_acc={int(k): float(v) for k, v in oh.items()}, onehop_increasing_sizes=inc,
                final_acc=final_acc,
                onehop_largest_acc=float(oh.iloc[-1]), median_spearman=med, ordering_tasks=order,
                multi_curve=curve)


def longest_increasing(values: np.ndarray) -> int:
    """Length of the longest strictly increasing subsequence of ``values`` (O(n²); n = number of sizes).

    The demo family's checks use it: "accuracy increases with size across at least k sizes".
    """
    best = [1] * len(values)
    for i in range(len(values)):
        for j in range(i):
            if values[j] < values[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best, default=0)


def format_checks(checks: dict, onehop_k: int = 4) -> str:
    """Markdown report of :func:`check_targets` with a pass/fail line per target."""
    acc = checks["onehop_final_acc"]
    n_sizes = len(acc)
    lines = ["| N (non-embedding) | one-hop accuracy (final checkpoint) |", "|---|---|"]
    lines += [f"| {n:,} | {a:.3f} |" for n, a in acc.items()]
    inc, largest = checks["onehop_increasing_sizes"], checks["onehop_largest_acc"]
    need = min(4, n_sizes)
    ok1 = inc >= need and largest >= 0.6
    lines += ["", f"- knowledge scaling: accuracy increases with size across {inc} of {n_sizes} sizes (longest "
              f"strictly increasing subsequence in size order; target >= {need}), largest = {largest:.3f} "
              f"(target >= 0.6 at K = {onehop_k}): **{'PASS' if ok1 else 'FAIL'}**", "",
              "| task | median ρ log p_vocab(correct) | median ρ p_choices(correct) | median ρ accuracy |",
              "|---|---|---|---|"]
    for task, v in checks["median_spearman"].items():
        lines.append(f"| {task} | {v['log_p_vocab_correct']:.3f} | {v['p_choices_correct']:.3f} | {v['acc']:.3f} |")
    order = checks["ordering_tasks"]
    lines += ["", "(per-item Spearman ρ with log10 compute over all checkpoints of the family; items constant over "
              "the checkpoints give NaN and are left out of the median)", "",
              f"- Schaeffer et al. ordering log p_vocab > p_choices > accuracy holds on: {order or 'no task'}: "
              f"**{'PASS' if order else 'FAIL'}**"]
    if "final_acc" in checks:
        fa = checks["final_acc"]
        lines += ["", "Accuracy of each size's final checkpoint (K = 4, chance 0.25):", "",
                  "| N | " + " | ".join(fa.columns) + " |", "|---|" + "---|" * len(fa.columns)]
        lines += [f"| {int(n):,} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for n, row in fa.iterrows()]
    lines += ["", "Multi-token task (exact match = greedy generation reproduces all answer words):", "",
              "| checkpoint | N | step | exact match | accuracy | mean log p_vocab(correct) [nats] |",
              "|---|---|---|---|---|---|"]
    for r in checks["multi_curve"].itertuples(index=False):
        lines.append(f"| {r.model_id} | {r.params:,} | {r.step} | {r.exact_match:.3f} | {r.acc:.3f} | "
                     f"{r.log_p_vocab_correct:.2f} |")
    return "\n".join(lines) + "\n"

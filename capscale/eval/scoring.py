"""Scoring engine: per-choice log-likelihoods of multiple-choice requests with a shared prefix.

A request is lm-eval's ``(context, continuation)`` pair (the continuation carries the target delimiter,
e.g. ``" Paris"``). :func:`score_requests` returns, in request order, the summed log-probability of the
continuation tokens in **nats** (float64), whether every continuation token is the argmax, and the number
of continuation tokens -- the same numbers lm-eval's HFLM ``loglikelihood`` gives (``score_requests_lm_eval``
runs that reference path), computed with much less work:

* **Tokenisation as lm-eval** (``TemplateLM._encode_pair`` + ``HFLM.tok_encode``, lm-eval 0.4.10--0.4.13):
  trailing whitespace of the context moves to the front of the continuation; the concatenation is encoded,
  then the context, and the continuation tokens are the tail of the whole encoding after as many tokens as
  the context encoding has. ``add_bos_token=None`` lets the tokenizer decide (HFLM's default), ``True`` /
  ``False`` force ``add_special_tokens``; a string that already starts with the decoded prefix token is
  encoded without special tokens. An empty context becomes ``[prefix token]`` (BOS, else EOS), or the first
  continuation token when that already is the prefix token.
* **Truncation as lm-eval**: a request longer than ``max_length + 1`` tokens loses tokens from the left of
  its context (the fed row is ``(ctx + cont)[-(max_length + 1):][:-1]``), so the effective context depends
  on the continuation length; requests are grouped by their *effective* context tokens.
* **Shared prefix, one packed row per context**: ``ctx | choice_1[:-1] | choice_2[:-1] | ...`` with a 4-D
  attention mask (causal within the context, each choice sees the context and its own earlier tokens) and
  ``position_ids`` restarting after the context for every choice. Every context token is fed once instead
  of once per choice.
* **Output head only where needed**: hidden states from the base model; the output embedding and a
  float32 log-softmax only at the positions that predict continuation tokens.
* **Length-sorted batching** (longest rows first, so an out-of-memory error comes early); ``batch_size``
  counts packed rows (= distinct contexts) per forward pass; ``"auto"`` batches by a token budget and
  halves it on out-of-memory.

Numbers differ from HFLM only by floating-point summation order (GEMM shapes): <= 1e-4 nats per choice in
float32 (tested), identical argmax decisions except on exact near-ties.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from capscale.errors import CapscaleError

__all__ = [
    "Request",
    "Score",
    "ScoringError",
    "CheckpointNotFoundError",
    "load_model",
    "score_requests",
    "score_requests_lm_eval",
    "encode_requests",
    "resolve_max_length",
    "shared_prefix_plan",
    "auto_token_budget",
    "MIN_SHARED_PREFIX",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048  # lm-eval HFLM._DEFAULT_MAX_LENGTH
_TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length
CPU_TOKEN_BUDGET = 4096  # batch_size="auto" on CPU: padded tokens per forward pass
CUDA_TOKEN_BUDGET = 65536  # batch_size="auto" on CUDA without a memory reading: first try, halved on OOM
MIN_SHARED_PREFIX = 16  # prefix_reuse="auto": shortest shared prefix (tokens) computed once for its items
MAX_PADDING = 0.15  # batch_size="auto": padded positions at most this share of a batch's tokens
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "auto": "auto"}


@dataclass(frozen=True)
class Request:
    """One lm-eval ``loglikelihood`` request.

    Attributes
    ----------
    context : str
        The conditioning text (lm-eval's context string, few-shot examples included).
    continuation : str
        The scored text, including the target delimiter (e.g. ``" Paris"``).
    """

    context: str
    continuation: str


@dataclass
class Score:
    """Result of one request.

    Attributes
    ----------
    loglik : float
        Sum over continuation tokens of log p(token | prefix), in nats (float64).
    is_greedy : bool
        True iff every continuation token is the argmax of its predictive distribution.
    n_tokens : int
        Number of continuation tokens after lm-eval's boundary rule.
    """

    loglik: float
    is_greedy: bool
    n_tokens: int


class ScoringError(CapscaleError, ValueError):
    """Bad input to the scorer (the message names the request or checkpoint)."""


class CheckpointNotFoundError(ScoringError):
    """A checkpoint path (or hub id) that cannot be found locally."""


# ----------------------------------------------------------------------------------------------------------
# Loading


def _torch_dtype(dtype: str | Any) -> Any:
    import torch

    if not isinstance(dtype, str):
        return dtype
    key = _DTYPES.get(dtype.lower())
    if key is None:
        raise ScoringError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16, auto")
    return "auto" if key == "auto" else getattr(torch, key)


def load_model(path: str, *, revision: str | None = None, dtype: str = "float32", device: str = "cpu",
               gguf_file: str | None = None, trust_remote_code: bool = False,
               attn_implementation: str = "sdpa", device_map: str | dict[str, Any] | None = None
               ) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer with transformers, ready for :func:`score_requests`.

    Parameters
    ----------
    path : str
        Local checkpoint folder (HF format, or a folder holding ``gguf_file``), a ``.gguf`` file, or a hub
        id resolved from the local Hugging Face cache (nothing is downloaded when ``HF_HUB_OFFLINE=1``).
    revision : str, optional
        Hub revision (branch such as ``step13000``, tag or commit); ignored for local folders.
    dtype : str
        ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"auto"`` (the config's dtype). Always pass
        it explicitly: transformers 5 otherwise loads the config dtype (float16 for Pythia).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    gguf_file : str, optional
        Name of a GGUF file inside ``path`` (weights are dequantised to ``dtype``; needs the ``gguf`` package).
    trust_remote_code : bool
        Passed to ``from_pretrained``.
    attn_implementation : str
        ``"sdpa"`` (default) or ``"eager"``; the packed rows need an attention that takes a 4-D mask.
    device_map : str or dict, optional
        transformers/accelerate ``device_map`` (``"auto"`` spreads a model that does not fit one GPU over the
        GPUs, then CPU memory); the model is then not moved to ``device``.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode on ``device``, and its tokenizer.

    Raises
    ------
    CheckpointNotFoundError
        The path does not exist locally and is not in the local hub cache.
    ScoringError
        Unknown dtype, missing ``gguf`` package.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path:
        raise CheckpointNotFoundError("checkpoint path is empty")
    p = os.path.expanduser(str(path))
    if gguf_file is None and p.lower().endswith(".gguf"):
        p, gguf_file = os.path.split(os.path.abspath(p))
    if gguf_file is not None and os.path.isabs(gguf_file):
        p, gguf_file = os.path.split(gguf_file)
    looks_local = os.path.isabs(p) or p.startswith((".", "~")) or os.path.exists(p) or p.count("/") != 1
    if looks_local and not os.path.isdir(p):
        raise CheckpointNotFoundError(f"checkpoint not found: {path!r} is not a folder")
    if gguf_file is not None:
        if os.path.isdir(p) and not os.path.isfile(os.path.join(p, gguf_file)):
            raise CheckpointNotFoundError(f"checkpoint not found: GGUF file {gguf_file!r} is not in {path!r}")
        try:
            import gguf  # noqa: F401
        except ImportError as e:
            raise ScoringError(f"loading the GGUF checkpoint {path!r}/{gguf_file} needs the 'gguf' package "
                               "(pip install 'capscale[gguf]' or pip install gguf)") from e
    elif os.path.isdir(p) and not os.path.isfile(os.path.join(p, "config.json")):
        raise CheckpointNotFoundError(f"checkpoint not found: {path!r} has no config.json")
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision and not os.path.isdir(p):
        kw["revision"] = revision
    if gguf_file is not None:
        kw["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, **kw)
        if device_map is not None:
            kw["device_map"] = device_map
        model = AutoModelForCausalLM.from_pretrained(p, dtype=_torch_dtype(dtype),
                                                     attn_implementation=attn_implementation, **kw)
    except OSError as e:
        where = f"{path!r}" + (f" (revision {revision!r})" if revision else "")
        raise CheckpointNotFoundError(f"checkpoint not found or unreadable: {where}: {e}") from e
    model.eval()
    if device_map is None:
        model.to(torch.device(device))
    return model, tokenizer


# ----------------------------------------------------------------------------------------------------------
# Tokenisation (lm-eval's rule)


def resolve_max_length(model: Any, tokenizer: Any = None, default: int = DEFAULT_MAX_LENGTH) -> int:
    """Maximum sequence length as lm-eval resolves it (``lm_eval.models.utils.resolve_max_length``).

    The nested ``text_config`` if any, else the config: ``n_positions``, ``max_position_embeddings``,
    ``n_ctx``; then the tokenizer's ``model_max_length`` unless unset; then ``default`` (2048).
    """
    config = getattr(model, "config", model)
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, attr, None)
        if v is not None:
            return int(v)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != _TOKENIZER_INFINITY:
        return int(mml)
    return default


def _prefix_token_id(tokenizer: Any) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if bos is not None else getattr(tokenizer, "eos_token_id", None)


def _describe(i: int, r: Request) -> str:
    ctx = r.context if len(r.context) <= 60 else "..." + r.context[-57:]
    return f"request {i} (context {ctx!r}, continuation {r.continuation!r})"


def encode_requests(tokenizer: Any, requests: Sequence[Request], *, add_bos_token: bool | None = None
                    ) -> list[tuple[list[int], list[int]]]:
    """Token ids ``(context_enc, continuation_enc)`` per request, exactly as lm-eval's HFLM builds them.

    Raises
    ------
    ScoringError
        The continuation is empty after the boundary rule (a token spans the join, or the continuation is
        empty), or the context is empty and the tokenizer has neither a BOS nor an EOS token.
    """
    prefix_id = _prefix_token_id(tokenizer)
    prefix_str = tokenizer.decode(prefix_id) if prefix_id is not None else None
    base_kw = {} if add_bos_token is None else {"add_special_tokens": bool(add_bos_token)}
    cache: dict[str, list[int]] = {}

    def enc(s: str) -> list[int]:
        got = cache.get(s)
        if got is None:
            kw = dict(base_kw)
            if prefix_str is not None and s.startswith(prefix_str):
                kw["add_special_tokens"] = False
            got = cache[s] = list(tokenizer.encode(s, **kw))
        return got

    out: list[tuple[list[int], list[int]]] = []
    for i, r in enumerate(requests):
        if not isinstance(r.context, str) or not isinstance(r.continuation, str):
            raise ScoringError(f"{_describe(i, r)}: context and continuation must be strings")
        context, continuation = r.context, r.continuation
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if context == "":
            # lm-eval: the continuation alone, without special tokens, after the prefix token.
            # (A whitespace-only context, on which HFLM fails an assertion, is handled the same way.)
            cont = list(tokenizer.encode(continuation, add_special_tokens=False))
            if not cont:
                raise ScoringError(f"{_describe(i, r)}: the continuation encodes to no tokens")
            if prefix_id is None:
                raise ScoringError(f"{_describe(i, r)}: empty context needs a BOS or EOS token to condition "
                                   f"on, and the tokenizer {type(tokenizer).__name__} has neither")
            ctx, cont = ([prefix_id], cont) if prefix_id != cont[0] else (cont[:1], cont[1:])
        else:
            whole = enc(context + continuation)
            ctx = enc(context)
            cont = whole[len(ctx):]
        if not cont:
            raise ScoringError(
                f"{_describe(i, r)}: empty continuation after lm-eval's boundary rule (the last context "
                "token spans the context/continuation join); change the target delimiter or the context")
        out.append((list(ctx), list(cont)))
    return out


# ----------------------------------------------------------------------------------------------------------
# Output head


def _head_fn(model: Any) -> Callable[[Any], Any] | None:
    """hidden -> logits (before softmax) for the positions given, or None when only the full model works.

    Checked once per model object against ``model(...).logits`` on a short input; architectures that
    post-process logits in ways not reproduced here fall back to full-model logits (correct, slower).
    """
    import torch

    cached = getattr(model, "_capscale_head_fn", "unset")
    if cached != "unset":
        return cached
    fn: Callable[[Any], Any] | None = None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    if head is not None and base is not None and base is not model:
        cfg = model.config
        cap = getattr(getattr(cfg, "text_config", None) or cfg, "final_logit_softcapping", None)

        def fn(h: Any, _head: Any = head, _cap: Any = cap) -> Any:
            z = _head(h)
            if _cap:
                z = torch.tanh(z / _cap) * _cap
            return z

        try:
            dev = next(model.parameters()).device
            vocab = int(head.weight.shape[0])
            ids = (torch.arange(7, device=dev) * 7919 + 11) % min(vocab, 1000)
            ids = ids[None, :]
            with torch.inference_mode():
                ref = model(input_ids=ids).logits[0].float()
                h = base(input_ids=ids)[0]
                got = fn(h[0]).float()
            ok = got.shape == ref.shape and torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * (1 + ref.abs().max()))
        except Exception as e:  # pragma: no cover - architecture-specific
            log.info("capscale.eval.scoring: head-only path unavailable (%s); using full logits", e)
            ok = False
        if not ok:
            log.warning("capscale.eval.scoring: %s post-processes its logits; using full-model logits (slower)",
                        type(model).__name__)
            fn = None
    try:
        model._capscale_head_fn = fn
    except Exception:  # pragma: no cover
        pass
    return fn


# ----------------------------------------------------------------------------------------------------------
# Packing, shared prefixes and batching


@dataclass
class _Group:
    """Requests sharing one effective context: one packed row ``ctx[skip:] | cont_1[:-1] | cont_2[:-1] | ...``."""

    ctx: list[int]
    members: list[int] = field(default_factory=list)  # request indices
    conts: list[list[int]] = field(default_factory=list)
    skip: int = 0  # leading context tokens served from a shared-prefix cache (not fed in this row)

    @property
    def row_len(self) -> int:
        return len(self.ctx) - self.skip + sum(len(c) - 1 for c in self.conts)


@dataclass
class _Cluster:
    """Groups whose contexts all start with ``prefix``; the prefix's key/value cache is computed once."""

    prefix: list[int]
    groups: list[_Group]


def _plan(encoded: Sequence[tuple[list[int], list[int]]], max_length: int, requests: Sequence[Request]
          ) -> tuple[list[_Group], int]:
    groups: dict[tuple[int, ...], _Group] = {}
    n_trunc = 0
    for i, (ctx, cont) in enumerate(encoded):
        if len(cont) > max_length:
            raise ScoringError(f"{_describe(i, requests[i])}: continuation has {len(cont)} tokens, more than "
                               f"the model's maximum length {max_length}")
        total = len(ctx) + len(cont)
        if total > max_length + 1:  # lm-eval: (ctx + cont)[-(max_length + 1):][:-1]
            ctx = ctx[total - (max_length + 1):]
            n_trunc += 1
        g = groups.get(key := tuple(ctx))
        if g is None:
            g = groups[key] = _Group(ctx=list(ctx))
        g.members.append(i)
        g.conts.append(cont)
    order = sorted(groups.values(), key=lambda g: (-g.row_len, -len(g.members), g.ctx))
    return order, n_trunc


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefix_plan(contexts: Sequence[Sequence[int]], min_prefix: int = 1) -> list[tuple[int, list[int]]]:
    """Partition token sequences into runs that share a prefix, maximising the tokens not fed again.

    The contexts are sorted; the longest common prefix of a run of sorted sequences is the minimum of the
    adjacent common prefixes. A run of ``n`` contexts sharing ``P`` tokens saves ``(n - 1) * P`` fed tokens;
    a run is split at its weakest links whenever its parts together save more (an optimal one-level cut of
    the sorted-prefix tree). Each shared prefix leaves at least one token of every member's context
    unshared, because the last context token's hidden state predicts the first continuation token.

    Parameters
    ----------
    contexts : sequence of sequence of int
        Token ids (distinct sequences; duplicates are already one group).
    min_prefix : int
        Shortest prefix (tokens) worth sharing; shorter runs are left unshared.

    Returns
    -------
    list of (prefix_length, member indices)
        One entry per run of >= 2 contexts sharing >= ``min_prefix`` tokens; contexts in no run are omitted.

    Examples
    --------
    >>> shared_prefix_plan([[1, 2, 3, 4, 9], [1, 2, 3, 4, 8], [7, 7]], min_prefix=2)
    [(4, [0, 1])]
    """
    n = len(contexts)
    if n < 2:
        return []
    order = sorted(range(n), key=lambda i: tuple(contexts[i]))
    cap = [len(contexts[i]) - 1 for i in order]  # keep >= 1 own token per member
    adj = [min(_lcp(contexts[order[k]], contexts[order[k + 1]]), cap[k], cap[k + 1]) for k in range(n - 1)]

    # best(lo, hi): the best saving over runs order[lo:hi]; explicit stack (the recursion can be deep).
    best: dict[tuple[int, int], tuple[int, list[tuple[int, int, int]]]] = {}
    stack: list[tuple[int, int, bool]] = [(0, n, False)]
    while stack:
        lo, hi, expanded = stack.pop()
        if hi - lo < 2:
            best[(lo, hi)] = (0, [])
            continue
        p = min(adj[lo:hi - 1])
        cuts = [k + 1 for k in range(lo, hi - 1) if adj[k] == p]
        parts = list(zip([lo, *cuts], [*cuts, hi]))
        if not expanded:
            stack.append((lo, hi, True))
            stack.extend((a, b, False) for a, b in parts if (a, b) not in best)
            continue
        whole = (hi - lo - 1) * p if p >= min_prefix else 0
        split = sum(best[ab][0] for ab in parts)
        if split > whole or p < min_prefix:
            best[(lo, hi)] = (split, [r for ab in parts for r in best[ab][1]])
        else:
            best[(lo, hi)] = (whole, [(lo, hi, p)] if whole > 0 else [])
    return [(p, [order[k] for k in range(lo, hi)]) for lo, hi, p in best[(0, n)][1]]


def _clusters(groups: list[_Group], min_prefix: int | None) -> list[_Cluster]:
    """Groups -> clusters: shared-prefix runs (``min_prefix`` tokens or more), then one plain cluster."""
    if min_prefix is None:
        return [_Cluster(prefix=[], groups=groups)] if groups else []
    runs = shared_prefix_plan([g.ctx for g in groups], min_prefix=min_prefix)
    used: set[int] = set()
    out: list[_Cluster] = []
    for p, members in runs:
        for k in members:
            groups[k].skip = p
        gs = sorted((groups[k] for k in members), key=lambda g: (-g.row_len, g.ctx))
        used.update(members)
        out.append(_Cluster(prefix=list(gs[0].ctx[:p]), groups=gs))
    rest = [g for k, g in enumerate(groups) if k not in used]
    out.sort(key=lambda c: -(len(c.prefix) + c.groups[0].row_len))  # longest first: an OOM comes early
    if rest:
        out.append(_Cluster(prefix=[], groups=rest))
    return out


def _next_batch(groups: list[_Group], start: int, batch_size: int | None, token_budget: int | None) -> int:
    """End index of the batch starting at ``start``.

    Groups are sorted longest first, so the first row of a batch sets its padded length ``T``. A batch ends at
    ``batch_size`` rows; under a token budget also when ``rows x T`` would exceed it, when padding would
    exceed ``MAX_PADDING`` of the batch's tokens (rows of very different lengths go to different batches:
    padded positions cost as much as real ones). A shared prefix adds no per-row memory (it is attended to in
    chunks, never copied per row), so it does not enter the budget.
    """
    T = groups[start].row_len
    end = start + 1
    real = T
    while end < len(groups):
        n = end - start + 1
        if batch_size is not None and n > batch_size:
            break
        if token_budget is not None:
            real_n = real + groups[end].row_len
            if n * T > token_budget or n * T - real_n > MAX_PADDING * n * T:
                break
            real = real_n
        end += 1
    return end


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _cache_kwarg(base: Any) -> str:
    """Name of the cache argument of ``base.forward``: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _text_config(model: Any) -> Any:
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get(decoder=True) if callable(get) else cfg


def _sliding(model: Any) -> bool:
    """Whether some layer attends through a sliding window (its cache layer would drop prefix keys)."""
    cfg = _text_config(model)
    if any("sliding" in str(t) for t in (getattr(cfg, "layer_types", None) or [])):
        return True
    return bool(getattr(cfg, "sliding_window", None)) and getattr(cfg, "use_sliding_window", True) is not False


def _run_base(model: Any, head: Callable[[Any], Any] | None, ids: Any, mask: Any, pos: Any,
              cache: Any = None) -> Any:
    """Hidden states (head path) or full logits of one forward; ``cache`` is filled in place when given."""
    kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    target = model.base_model if head is not None else model
    if cache is not None:
        kw[_cache_kwarg(target)] = cache
        kw["use_cache"] = True
    else:
        kw["use_cache"] = False
    out = target(**kw)
    return out[0] if head is not None else out.logits


def _prefix_kv(model: Any, head: Callable[[Any], Any] | None, prefix: list[int], device: Any) -> list[Any]:
    """Key/value tensors ``[(k, v)]`` per layer (batch 1, after rotary embeddings) of the prefix tokens."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    ids = torch.tensor([prefix], dtype=torch.long, device=device)
    pos = torch.arange(len(prefix), device=device)[None]
    with torch.inference_mode():
        _run_base(model, head, ids, None, pos, cache=cache)
    return [(layer.keys, layer.values) for layer in cache.layers]


_PREFIX_ATTN = "capscale_shared_prefix"
_PART1_BYTES = 1 << 28  # float32 scores of one chunk of queries against the prefix: at most 256 MiB


def _prefix_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                      dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """Attention of a batch of rows to a shared prefix (batch 1, never copied per row) plus their own keys.

    A transformers attention function (registered as ``capscale_shared_prefix`` and selected only for the
    forward passes that carry ``capscale_prefix_kv``). The two parts are exact softmax pieces merged by their
    log-sum-exp, as in cascade attention: (1) every row's queries, folded into one sequence, against the
    prefix's keys -- one large matrix product, no mask (every row sees the whole prefix); (2) each row's
    queries against its own keys under ``attention_mask`` (``B x 1 x T x T``: causal, packed choices).
    Scores are formed in the model's dtype and exponentiated and summed in float32, as eager attention does.
    """
    import torch

    kp, vp = kwargs["capscale_prefix_kv"][module.layer_idx]
    B, H, T, D = query.shape
    rep = H // key.shape[1]
    if rep > 1:  # grouped-query attention
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
        kp, vp = kp.repeat_interleave(rep, dim=1), vp.repeat_interleave(rep, dim=1)
    scale = scaling if scaling is not None else D ** -0.5
    P = kp.shape[-2]
    # (1) all B*T queries against the prefix, in chunks of queries
    q1 = query.transpose(0, 1).reshape(H, B * T, D)
    kT, v1 = kp[0].transpose(-1, -2), vp[0]
    step = max(1, _PART1_BYTES // max(1, 4 * H * P))
    m1s, l1s, o1s = [], [], []
    for i in range(0, B * T, step):
        sc = torch.matmul(q1[:, i:i + step], kT).float() * scale
        m = sc.amax(dim=-1, keepdim=True)
        e = torch.exp(sc - m)
        m1s.append(m)
        l1s.append(e.sum(dim=-1, keepdim=True))
        o1s.append(torch.matmul(e.to(v1.dtype), v1).float())
    m1 = torch.cat(m1s, 1).reshape(H, B, T, 1).transpose(0, 1)
    l1 = torch.cat(l1s, 1).reshape(H, B, T, 1).transpose(0, 1)
    o1 = torch.cat(o1s, 1).reshape(H, B, T, D).transpose(0, 1)
    # (2) each row against its own keys
    sc = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    if attention_mask is not None:
        sc = sc + attention_mask[..., -T:].float()
    m2 = sc.amax(dim=-1, keepdim=True)
    e = torch.exp(sc - m2)
    l2 = e.sum(dim=-1, keepdim=True)
    o2 = torch.matmul(e.to(value.dtype), value).float()
    m = torch.maximum(m1, m2)
    a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)
    out = (o1 * a1 + o2 * a2) / (l1 * a1 + l2 * a2)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _register_prefix_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_PREFIX_ATTN, _prefix_attention)


def _run_with_prefix(model: Any, head: Callable[[Any], Any] | None, ids: Any, mask: Any, pos: Any,
                     kv: list[Any]) -> Any:
    """One forward of rows that continue the shared prefix ``kv`` (their own tokens at positions after it)."""
    _register_prefix_attention()
    cfg = model.config
    saved = cfg._attn_implementation
    target = model.base_model if head is not None else model
    try:
        cfg._attn_implementation = _PREFIX_ATTN
        out = target(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, capscale_prefix_kv=kv)
    finally:
        cfg._attn_implementation = saved
    return out[0] if head is not None else out.logits


def _prefix_cache_ok(model: Any, head: Callable[[Any], Any] | None) -> bool:
    """Whether this model scores rows against a shared prefix exactly like the full sequence (checked once per
    model object on a short input, two rows; False on any error or mismatch)."""
    import torch

    cached = getattr(model, "_capscale_prefix_ok", None)
    if cached is not None:
        return bool(cached)
    ok = False
    why = ""
    if _sliding(model):
        why = "sliding-window attention"
    else:
        try:
            dev = _input_device(model)
            vocab = int(model.get_input_embeddings().weight.shape[0])
            ids = ((torch.arange(12, device=dev) * 7919 + 11) % min(vocab, 1000))[None]
            with torch.inference_mode():
                ref = _run_base(model, head, ids, None, torch.arange(12, device=dev)[None])[0, 6:]
                kv = _prefix_kv(model, head, ids[0, :6].tolist(), dev)
                dtype = next(model.parameters()).dtype
                ar = torch.arange(6, device=dev)
                mask = torch.zeros((2, 1, 6, 6), dtype=dtype, device=dev)
                mask.masked_fill_(~(ar[None, :] <= ar[:, None]), torch.finfo(dtype).min)
                got = _run_with_prefix(model, head, ids[:, 6:].expand(2, -1), mask,
                                       (ar + 6)[None].expand(2, -1), kv)
                if head is not None:
                    ref, got = head(ref), head(got)
                ref, got = ref.float(), got.float()
            ok = all(torch.allclose(got[b], ref, rtol=1e-3, atol=1e-3 * (1 + float(ref.abs().max())))
                     for b in range(2))
            why = "" if ok else "shared-prefix logits differ from the full sequence's"
        except Exception as e:  # noqa: BLE001 - any failure means: do not use the shared-prefix path
            why = f"{type(e).__name__}: {e}"
    if not ok:
        log.warning("capscale.eval.scoring: %s cannot score against a shared-prefix cache (%s); scoring every "
                    "context in full", type(model).__name__, why)
    try:
        model._capscale_prefix_ok = ok
    except Exception:  # pragma: no cover
        pass
    return ok


def _input_device(model: Any) -> Any:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def _forward_batch(model: Any, head: Callable[[Any], Any] | None, batch: list[_Group], device: Any,
                   pad_id: int, kv: list[Any] | None = None, align: int = 1) -> tuple[list[float], list[bool], int]:
    """Score every request of the groups in ``batch``; returns (loglik per member, greedy per member, T).

    With ``kv`` (the shared prefix's keys and values, ``batch[*].skip`` tokens) the rows hold only each
    context's own tokens and the choices, at positions after the prefix, and every row attends to the whole
    prefix through :func:`_prefix_attention`. ``align`` rounds the key length of the mask's storage up (CUDA's
    memory-efficient attention wants 16-element rows).
    """
    import torch

    T = batch[0].row_len
    B = len(batch)
    P = batch[0].skip if kv is not None else 0
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    seg = torch.full((B, T), -2, dtype=torch.long)  # -1 context, j >= 0 choice j, -2 padding
    pred_flat: list[int] = []
    targets: list[int] = []
    owner: list[int] = []  # running member index for each predicted token
    m = 0
    for b, g in enumerate(batch):
        own = g.ctx[P:]
        L = len(own)
        ids[b, :L] = torch.tensor(own)
        pos[b, :L] = torch.arange(P, P + L)
        seg[b, :L] = -1
        s = L
        for j, cont in enumerate(g.conts):
            c = len(cont)
            if c > 1:
                ids[b, s:s + c - 1] = torch.tensor(cont[:-1])
                pos[b, s:s + c - 1] = torch.arange(P + L, P + L + c - 1)
                seg[b, s:s + c - 1] = j
            pred_flat.append(b * T + L - 1)
            pred_flat.extend(b * T + s + t for t in range(c - 1))
            targets.extend(cont)
            owner.extend([m] * c)
            s += c - 1
            m += 1
    ids, pos, seg = ids.to(device), pos.to(device), seg.to(device)
    dtype = next(model.parameters()).dtype
    ar = torch.arange(T, device=device)
    causal = ar[None, :] <= ar[:, None]  # [q, k]
    allowed = causal[None] & ((seg[:, None, :] == -1) | (seg[:, None, :] == seg[:, :, None]))
    T_store = -(-T // align) * align
    mask = torch.zeros((B, 1, T, T_store), dtype=dtype, device=device)[..., :T]
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    idx = torch.tensor(pred_flat, dtype=torch.long, device=device)
    tgt = torch.tensor(targets, dtype=torch.long, device=device)
    with torch.inference_mode():
        if kv is not None:
            out = _run_with_prefix(model, head, ids, mask, pos, kv)
        else:
            out = _run_base(model, head, ids, mask, pos)
        if head is not None:
            logits = head(out.reshape(B * T, -1).index_select(0, idx)).float()
        else:
            logits = out.reshape(B * T, -1).index_select(0, idx).float()
        lp = torch.log_softmax(logits, dim=-1)
        tok_lp = lp.gather(1, tgt[:, None])[:, 0].double()
        greedy = logits.argmax(dim=-1) == tgt
        own_t = torch.tensor(owner, dtype=torch.long, device=device)
        ll = torch.zeros(m, dtype=torch.float64, device=device).index_add_(0, own_t, tok_lp)
        n_bad = torch.zeros(m, dtype=torch.long, device=device).index_add_(0, own_t, (~greedy).long())
    return ll.cpu().tolist(), (n_bad == 0).cpu().tolist(), T


def auto_token_budget(model: Any, device: Any = None, *, max_key_len: int = DEFAULT_MAX_LENGTH) -> int:
    """Padded tokens per forward pass for ``batch_size="auto"``.

    On CPU a fixed 4,096 (larger batches do not run faster there). On CUDA it is derived from the free memory
    (``torch.cuda.mem_get_info``) and the model's shape: per fed token, the transient activations of one
    layer (``(6 d + 3 d_ff)`` elements), the model-dtype mask row and one layer's float32 attention scores
    over ``max_key_len`` keys (the math kernel's worst case), and two cached key/value rows per layer; half
    the free memory is used. The result is clamped to 1,024 .. 1,048,576 tokens; an out-of-memory error
    still halves it.

    Parameters
    ----------
    model : transformers model
    device : torch.device or str, optional
        Default: the model's input device.
    max_key_len : int
        Longest key length a row will see (tokens).

    Returns
    -------
    int
        Tokens per forward pass.
    """
    import torch

    dev = torch.device(device) if device is not None else _input_device(model)
    if dev.type != "cuda":
        return CPU_TOKEN_BUDGET
    try:
        free, _total = torch.cuda.mem_get_info(dev)
    except Exception:  # noqa: BLE001 - no reading: the fixed first try
        return CUDA_TOKEN_BUDGET
    cfg = _text_config(model)
    d = int(getattr(cfg, "hidden_size", 1024))
    dff = int(getattr(cfg, "intermediate_size", None) or 4 * d)
    heads = int(getattr(cfg, "num_attention_heads", 16))
    kvh = int(getattr(cfg, "num_key_value_heads", None) or heads)
    layers = int(getattr(cfg, "num_hidden_layers", 12))
    el = next(model.parameters()).element_size()
    per_token = el * (6 * d + 3 * dff) + el * max_key_len + 4 * heads * max_key_len \
        + 2 * layers * el * kvh * (d // heads)
    budget = int(0.5 * free / max(per_token, 1))
    return int(min(max(budget // 256 * 256, 1024), 1 << 20))


def score_requests(model: Any, tokenizer: Any, requests: Sequence[Request], *, batch_size: int | str = "auto",
                   device: str | None = None, progress: bool = True, add_bos_token: bool | None = None,
                   desc: str | None = None, max_length: int | None = None,
                   prefix_reuse: bool | str | None = "auto",
                   stats: dict[str, Any] | None = None) -> list[Score]:
    """Score requests with a shared prefix per distinct context; results in request order.

    Parameters
    ----------
    model : transformers causal LM
        Any ``AutoModelForCausalLM`` whose attention accepts a 4-D mask (``sdpa`` or ``eager``). A model
        loaded with a ``device_map`` (several devices) is used where it is; inputs go to its embedding's device.
    tokenizer : transformers tokenizer
        The model's tokenizer. No pad token is needed; BOS or EOS is needed only for empty contexts.
    requests : sequence of Request
    batch_size : int or "auto"
        Packed rows (= distinct effective contexts) per forward pass, or ``"auto"``: rows up to a padded-token
        budget (4,096 on CPU; on CUDA derived from free memory by :func:`auto_token_budget`, halved on
        out-of-memory until it fits).
    device : str, optional
        Where to run; default the model's device (a model on another device type is moved there).
    progress : bool
        Show a tqdm bar (requests, with tokens/s).
    add_bos_token : bool, optional
        As HFLM's ``add_bos_token``: None lets the tokenizer decide, True/False force it.
    desc : str, optional
        Progress-bar label.
    max_length : int, optional
        Override the model's maximum length (default: as lm-eval resolves it).
    prefix_reuse : "auto", True or False
        Compute a token prefix shared by several effective contexts (a task's fixed few-shot block) once, as a
        key/value cache, and feed each context only from where it differs (:func:`shared_prefix_plan`).
        ``"auto"`` (default) shares prefixes of at least ``MIN_SHARED_PREFIX`` (16) tokens; ``True`` any shared
        prefix; ``False`` never. Models whose cache path does not reproduce the full sequence's logits (checked
        once per model) and sliding-window models are scored without it, with a warning.
    stats : dict, optional
        Filled with run statistics: ``n_requests``, ``n_groups``, ``n_truncated``, ``unique_tokens`` (tokens
        fed, without padding, shared prefixes counted once), ``context_tokens`` (tokens the same rows would
        feed without prefix reuse), ``prefix_reuse`` (used or not), ``n_prefixes``, ``prefix_tokens``,
        ``padded_tokens``, ``n_batches``, ``batch_sizes`` (rows per batch), ``token_budget``, ``wall_s``.

    Returns
    -------
    list of Score
        ``loglik`` in nats (float64 sum of float32 log-probabilities), ``is_greedy``, ``n_tokens``.

    Raises
    ------
    ScoringError
        Empty continuation after the boundary rule, an over-long continuation, a tokenizer without the
        special tokens an empty context needs, an invalid batch size or ``prefix_reuse``, a single row that
        does not fit in memory (each names the request).
    """
    import torch
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    requests = list(requests)
    for i, r in enumerate(requests):
        if not isinstance(r, Request):
            if isinstance(r, tuple) and len(r) == 2:
                requests[i] = Request(*r)
            else:
                raise ScoringError(f"request {i} is {type(r).__name__}, expected capscale.eval.scoring.Request")
    if isinstance(batch_size, str):
        if batch_size != "auto":
            try:
                batch_size = int(batch_size)
            except ValueError:
                raise ScoringError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}") \
                    from None
    if isinstance(batch_size, int) and batch_size < 1:
        raise ScoringError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    reuse = _prefix_mode(prefix_reuse)
    mapped = bool(getattr(model, "hf_device_map", None)) and len(set(model.hf_device_map.values())) > 1
    dev = _input_device(model)
    if device is not None and torch.device(device).type != dev.type and not mapped:
        log.info("capscale.eval.scoring: moving the model from %s to %s", dev, device)
        model.to(torch.device(device))
        dev = _input_device(model)
    if max_length is None:
        max_length = resolve_max_length(model, tokenizer)
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in (None, "sdpa", "eager", "flex_attention"):
        raise ScoringError(f"attention implementation {attn!r} cannot take the packed-row mask; load the model "
                           "with attn_implementation='sdpa' or 'eager'")

    encoded = encode_requests(tokenizer, requests, add_bos_token=add_bos_token)
    groups, n_trunc = _plan(encoded, max_length, requests)
    if n_trunc:
        log.warning("capscale.eval.scoring: %d request(s) longer than the maximum length %d were left-truncated "
                    "(as lm-eval does)", n_trunc, max_length)
    head = _head_fn(model)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = _prefix_token_id(tokenizer) or 0
    context_tokens = sum(g.row_len for g in groups)
    min_prefix = None if reuse is False else (MIN_SHARED_PREFIX if reuse == "auto" else 1)
    clusters = _clusters(groups, min_prefix)
    if any(c.prefix for c in clusters) and not _prefix_cache_ok(model, head):  # checked only where it is used
        for g in groups:
            g.skip = 0
        clusters = _clusters(groups, None)
    shared = [c for c in clusters if c.prefix]

    results: list[Score | None] = [None] * len(requests)
    auto = batch_size == "auto"
    longest = max((len(c.prefix) + c.groups[0].row_len for c in clusters), default=1)
    budget = auto_token_budget(model, dev, max_key_len=longest) if auto else None
    fixed = None if auto else int(batch_size)
    align = 16 if dev.type == "cuda" else 1
    st = {"n_requests": len(requests), "n_groups": len(groups), "n_truncated": n_trunc,
          "unique_tokens": sum(g.row_len for g in groups) + sum(len(c.prefix) for c in shared),
          "context_tokens": context_tokens, "prefix_reuse": bool(shared), "n_prefixes": len(shared),
          "prefix_tokens": sum(len(c.prefix) for c in shared), "padded_tokens": 0, "n_batches": 0,
          "batch_sizes": [], "token_budget": budget}
    bar = tqdm(total=len(requests), desc=desc or "capscale scoring", unit="req", disable=not progress,
               dynamic_ncols=True)
    fed = 0
    try:
        for cl in clusters:
            kv = None
            if cl.prefix:
                kv = _prefix_kv(model, head, cl.prefix, dev)
                fed += len(cl.prefix)
            gs = cl.groups
            start = 0
            while start < len(gs):
                batch = gs[start:_next_batch(gs, start, fixed, budget)]
                try:
                    ll, greedy, T = _forward_batch(model, head, batch, dev, pad_id, kv=kv, align=align)
                except Exception as e:
                    if not _is_oom(e):
                        raise
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    if auto and budget is not None and len(batch) > 1:
                        budget = max(batch[0].row_len, budget // 2)
                        log.warning("capscale.eval.scoring: out of memory; token budget halved to %d", budget)
                        continue
                    i0 = batch[0].members[0]
                    raise ScoringError(
                        f"out of memory scoring {len(batch)} row(s) of {batch[0].row_len} tokens"
                        + (f" after a shared prefix of {len(cl.prefix)} tokens" if cl.prefix else "")
                        + f", the longest holding {_describe(i0, requests[i0])}; "
                        + ("a single row does not fit on this device" if len(batch) == 1
                           else "use a smaller batch size")) from e
                start += len(batch)
                k = 0
                for g in batch:
                    for i, cont in zip(g.members, g.conts):
                        results[i] = Score(loglik=float(ll[k]), is_greedy=bool(greedy[k]), n_tokens=len(cont))
                        k += 1
                fed += sum(g.row_len for g in batch)
                st["padded_tokens"] += T * len(batch)
                st["n_batches"] += 1
                st["batch_sizes"].append(len(batch))
                bar.update(sum(len(g.members) for g in batch))
                el = time.perf_counter() - t_start
                if progress and el > 0:
                    bar.set_postfix_str(f"{fed / el:,.0f} tok/s", refresh=False)
    finally:
        bar.close()
    st["token_budget"] = budget
    st["wall_s"] = time.perf_counter() - t_start
    if stats is not None:
        stats.update(st)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _prefix_mode(v: bool | str | None) -> bool | str:
    if v is None or (isinstance(v, str) and v.lower() == "auto"):
        return "auto"
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("on", "true", "yes", "1"):
        return True
    if isinstance(v, str) and v.lower() in ("off", "false", "no", "0"):
        return False
    raise ScoringError(f"prefix_reuse must be 'auto', True/'on' or False/'off', got {v!r}")


# ----------------------------------------------------------------------------------------------------------
# Reference: lm-eval's HFLM


def score_requests_lm_eval(model: Any, tokenizer: Any, requests: Sequence[Request], *,
                           batch_size: int | str = 1, device: str = "cpu", add_bos_token: bool | None = None,
                           max_length: int | None = None, softmax_dtype: str | None = "float32",
                           progress: bool = False) -> list[Score]:
    """The same requests through lm-eval's ``HFLM(pretrained=model).loglikelihood`` (the reference path).

    ``softmax_dtype="float32"`` matches capscale's float32 log-softmax for bfloat16 weights (for float32
    weights it changes nothing). ``n_tokens`` comes from HFLM's own ``_encode_pair``. The tokenizer is
    copied first because HFLM may add a pad token to it. ``device`` is informational: HFLM takes the
    device of a pre-loaded model.
    """
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    tok = copy.deepcopy(tokenizer)
    kw: dict[str, Any] = {}
    if softmax_dtype is not None:
        kw["softmax_dtype"] = softmax_dtype
    if max_length is not None:
        kw["max_length"] = max_length
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=device,
              add_bos_token=add_bos_token, **kw)
    requests = [r if isinstance(r, Request) else Request(*r) for r in requests]
    insts = [Instance(request_type="loglikelihood", doc={}, arguments=(r.context, r.continuation), idx=i)
             for i, r in enumerate(requests)]
    out = lm.loglikelihood(insts, disable_tqdm=not progress)
    n_tok = []
    for r in requests:
        if r.context == "":
            c = lm.tok_encode(r.continuation, add_special_tokens=False)
            n_tok.append(len(c) - (1 if c and c[0] == lm.prefix_token_id else 0))
        else:
            n_tok.append(len(lm._encode_pair(r.context, r.continuation)[1]))
    return [Score(loglik=float(ll), is_greedy=bool(g), n_tokens=n) for (ll, g), n in zip(out, n_tok)]


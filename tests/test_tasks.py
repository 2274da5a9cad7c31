"""Task resolution: local tasks over the real items, lm-eval request construction, include paths, errors."""

from __future__ import annotations

import csv
import json
import re

import pytest

from capscale.data.tasks import (
    NotMultipleChoiceError,
    TaskError,
    UnknownTaskError,
    build_items,
    items_from_records,
    resolve_tasks,
)


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets"))


def _one(name, mc_data, **kw):
    (spec,) = resolve_tasks(name, data_dir=mc_data, **kw)
    return spec, build_items(spec)


def test_arc_easy_requests_match_the_file(mc_data):
    spec, built = _one("arc_easy", mc_data, limit=3)
    assert spec.source == "capscale-local:tasks/arc_easy.yaml" and spec.kind == "local"
    rows = [json.loads(x) for x in open(mc_data / "arc_easy" / "test.jsonl").read().splitlines()[:3]]
    assert [it.doc_id for it in built.items] == [0, 1, 2]
    for it, r in zip(built.items, rows, strict=True):
        texts = [c["text"] for c in r["question"]["choices"]]
        labels = [c["label"] for c in r["question"]["choices"]]
        assert it.requests == [(f"Question: {r['question']['stem']}\nAnswer:", " " + t) for t in texts]
        assert it.choices == texts and it.gold == [labels.index(r["answerKey"])] and not it.multiple_input


def test_winogrande_is_multiple_input(mc_data):
    _, built = _one("winogrande", mc_data, limit=2)
    r = json.loads(open(mc_data / "winogrande" / "dev.jsonl").readline())
    it = built.items[0]
    i = r["sentence"].index("_")
    assert it.multiple_input
    assert it.requests == [(r["sentence"][:i] + r["option1"], " " + r["sentence"][i + 1:].strip()),
                           (r["sentence"][:i] + r["option2"], " " + r["sentence"][i + 1:].strip())]
    assert it.gold == [int(r["answer"]) - 1]


def test_mmlu_five_shot_uses_dev_exemplars(mc_data):
    spec, built = _one("mmlu_anatomy", mc_data, limit=1, num_fewshot=5)
    assert built.num_fewshot == 5
    with open(mc_data / "mmlu" / "dev" / "anatomy_dev.csv", newline="") as fh:
        dev = list(csv.DictReader(fh))
    ctx, cont = built.items[0].requests[0]
    assert ctx.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert ctx.count("\nAnswer:") == 6 and cont == " A"
    first = dev[0]
    assert f"{first['question'].strip()}\nA. {first['choice0']}" in ctx
    assert ctx.index(first["question"].strip()) < ctx.index(dev[4]["question"].strip())  # first_n sampler order
    assert [c for _, c in built.items[0].requests] == [" A", " B", " C", " D"]


def test_groups_expand_to_leaf_tasks(mc_data):
    specs = resolve_tasks("zorro", data_dir=mc_data, limit=1)
    assert len(specs) == 23 and all(s.group == "zorro" and s.name.startswith("zorro_") for s in specs)
    built = build_items(specs[0])
    it = built.items[0]
    lines = open(mc_data / "zorro" / (specs[0].name[len("zorro_"):] + ".txt")).read().split("\n")
    assert it.requests == [("", " " + lines[1]), ("", " " + lines[0])]  # grammatical (2nd line) is choice 0
    assert it.gold == [0]


def test_lambada_copa_blimp_piqa_social_obqa(mc_data):
    _, lam = _one("lambada", mc_data, limit=1)
    text = json.loads(open(mc_data / "lambada" / "lambada_test.jsonl").readline())["text"]
    assert lam.items[0].requests == [(" ".join(text.split(" ")[:-1]), " " + text.split(" ")[-1])]
    _, cp = _one("copa", mc_data, limit=1)
    assert cp.items[0].requests[0] == ("My body cast a shadow over the grass because", "  the sun was rising.")
    _, bl = _one("blimp_adjunct_island", mc_data, limit=1)
    assert bl.items[0].requests[0][0] == "" and bl.items[0].gold == [0]
    for name, k in (("piqa", 2), ("social_iqa", 3), ("openbookqa", 4), ("arc_challenge", None)):
        _, b = _one(name, mc_data, limit=2)
        assert len(b.items) == 2 and all(len(it.requests) == len(it.choices) for it in b.items)
        assert k is None or all(len(it.choices) == k for it in b.items)


def _write_jsonl_task(folder, name="synth_recall", rel=True, output_type="multiple_choice"):
    folder.mkdir(parents=True, exist_ok=True)
    recs = [{"doc_id": i, "context": f"Fact {i}: the colour of item {i} is", "choices": ["red", "blue", "green",
                                                                                        "dark blue"],
             "gold": i % 4} for i in range(5)]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = f"{name}.jsonl" if rel else str(folder / f"{name}.jsonl")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\noutput_type: {output_type}\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "doc_to_text: \"{{context}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{gold}}\"\n"
        "target_delimiter: \" \"\nmetadata:\n  version: 1.0\n")
    return recs


def test_include_path_jsonl_task_matches_fast_path(tmp_path):
    recs = _write_jsonl_task(tmp_path / "synth")
    (spec,) = resolve_tasks("synth_recall", include_path=tmp_path / "synth")
    assert spec.kind == "include" and spec.source.startswith("include:")
    built = build_items(spec)
    fast = items_from_records(recs, task="synth_recall")
    assert [(i.doc_id, i.requests, i.gold, i.choices) for i in built.items] == \
        [(i.doc_id, i.requests, i.gold, i.choices) for i in fast]


def test_not_multiple_choice_and_unknown(tmp_path, mc_data):
    _write_jsonl_task(tmp_path / "ll", name="not_mc", output_type="loglikelihood")
    with pytest.raises(NotMultipleChoiceError, match="'not_mc'.*loglikelihood"):
        resolve_tasks("not_mc", include_path=tmp_path / "ll")
    # lm-eval's own index (15k names, 7-30 s to build) is left out here; the message names what was searched
    with pytest.raises(UnknownTaskError, match="unknown task 'arc_eassy': not found in local.*arc_easy"):
        resolve_tasks("arc_eassy", data_dir=mc_data, search_lm_eval=False)


def test_items_from_records_errors():
    with pytest.raises(TaskError, match="record 0: missing field 'choices'"):
        items_from_records([{"context": "x", "gold": 0}], task="t")
    with pytest.raises(TaskError, match="'t', record 1: gold 3 is out of range for K = 2"):
        items_from_records([{"context": "x", "choices": ["a"], "gold": 0},
                            {"context": "x", "choices": ["a", "b"], "gold": 3}], task="t")
    with pytest.raises(FileNotFoundError, match="include-path"):
        resolve_tasks("x", include_path="/nonexistent/dir")


def _bad_gold_task(folder, gold=9):
    recs = _write_jsonl_task(folder)
    recs[2]["gold"] = gold
    (folder / "synth_recall.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_bad_gold_few_shot_exemplar_names_task_and_doc(tmp_path):
    # lm-eval used to fail with a bare IndexError while formatting the exemplar ``choices[9]``
    _bad_gold_task(tmp_path / "synth")
    (spec,) = resolve_tasks("synth_recall", include_path=tmp_path / "synth", num_fewshot=2)
    with pytest.raises(TaskError, match=r"task 'synth_recall', few-shot exemplar doc 2: gold 9 is out of range for "
                                        r"K = 4 choices \(valid: 0\.\.3\)"):
        build_items(spec)


@pytest.mark.parametrize("gold, why", [(9, r"gold 9 is out of range for K = 4 choices \(valid: 0\.\.3\)"),
                                       ("purple", r"gold 'purple' is not one of the K = 4 choices")])
def test_bad_gold_eval_doc_is_excluded_and_logged_with_gold_and_k(tmp_path, caplog, gold, why):
    _bad_gold_task(tmp_path / "synth", gold=gold)
    (spec,) = resolve_tasks("synth_recall", include_path=tmp_path / "synth")
    with caplog.at_level("WARNING", logger="capscale.data.tasks"):
        built = build_items(spec)
    assert [it.doc_id for it in built.items] == [0, 1, 3, 4] and built.excluded == {"bad_gold": [2]}
    assert re.search(rf"task synth_recall: 1 item\(s\) excluded .*doc_id 2: {why}", caplog.text), caplog.text


def test_items_from_records_gold_error_names_doc_id():
    with pytest.raises(TaskError, match=r"task 't', record 1 \(doc_id 'q7'\): gold 9 is out of range for K = 4 "
                                        r"choices \(valid: 0\.\.3\)"):
        items_from_records([{"doc_id": "q6", "context": "x", "choices": list("abcd"), "gold": 0},
                            {"doc_id": "q7", "context": "x", "choices": list("abcd"), "gold": 9}], task="t")
    with pytest.raises(TaskError, match=r"record 0 \(doc_id 3\): 'choices' must be a list"):
        items_from_records([{"doc_id": 3, "context": "x", "choices": 5, "gold": 0}], task="t")

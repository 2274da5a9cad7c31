"""The synthetic micro-world: determinism, fact coverage, task format and bad input."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from capscale.synthetic import world as syn

SMALL = syn.WorldConfig(n_people=40, exposures=5, company_exposures=4, n_items=30, seed=3)


@pytest.fixture(scope="module")
def world():
    return syn.generate_world(SMALL)


@pytest.fixture(scope="module")
def corpus(world):
    return syn.corpus_lines(world)


@pytest.fixture(scope="module")
def tasks(world):
    return syn.make_tasks(world)


def test_deterministic_for_a_seed(world, corpus, tasks):
    w2 = syn.generate_world(SMALL)
    assert w2.people.equals(world.people)
    assert syn.corpus_lines(w2) == corpus
    assert syn.make_tasks(w2) == tasks
    other = syn.generate_world(syn.WorldConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not other.people.equals(world.people)


def test_every_fact_has_the_documented_number_of_exposures(world, corpus):
    text = Counter()
    for line in corpus:
        for sent in line.split(" . "):
            text[sent.rstrip(" .")] += 1
    for row in world.people.itertuples(index=False):
        for attr in syn.ATTRIBUTES:
            stated = sum(text[t.format(n=row.name, v=getattr(row, attr)).rstrip(" .")] for t in syn.TEMPLATES[attr])
            assert stated == SMALL.exposures, (row.name, attr)
        composed = text[syn.TWO_HOP_TEMPLATE.format(n=row.name, v="X").rsplit(" ", 2)[0]]  # never a bare prefix
        assert composed == 0
    for c in world.companies.itertuples(index=False):
        assert sum(text[t.format(c=c.company, v=c.hq_city).rstrip(" .")]
                   for t in syn.COMPANY_TEMPLATES) == SMALL.company_exposures


def test_items_ask_only_facts_in_the_corpus(world, corpus, tasks):
    joined = "\n".join(corpus)
    people = world.people.set_index("name")
    hq = dict(zip(world.companies["company"], world.companies["hq_city"]))
    for task, items in tasks.items():
        n_test = int((~world.people["two_hop_in_corpus"]).sum())
        assert len(items) == (min(SMALL.n_items, n_test) if task == "synth_twohop" else SMALL.n_items)
        for it in items:
            gold = it["choices"][it["gold"]]
            # every fact an item asks is stated in the corpus; the composed two-hop sentence is not
            sentence = f"{it['context']} {gold} ."
            if task == "synth_twohop":
                assert sentence not in joined
                name = it["context"].split(" works for")[0]
                emp = people.loc[name, "employer"]
                assert hq[emp] == gold
                assert not people.loc[name, "two_hop_in_corpus"]
                assert f"{name} works for {emp} ." in joined or f"{name} is employed by {emp} ." in joined \
                    or f"the employer of {name} is {emp} ." in joined
            else:
                # the fact is stated (the item may use another of the attribute's phrasings)
                attr = it["attribute"]
                name = next(n for n in people.index if f" {n} " in f" {it['context']} ")
                assert people.loc[name, attr] == gold
                assert any(t.format(n=name, v=gold) in joined for t in syn.TEMPLATES[attr]), (task, it)


def test_item_format(tasks):
    for items in tasks.values():
        assert [it["doc_id"] for it in items] == list(range(len(items)))
        for it in items:
            assert len(it["choices"]) == SMALL.k >= 4
            assert len(set(it["choices"])) == len(it["choices"])
            assert 0 <= it["gold"] < SMALL.k
            assert all(c and c == c.strip() for c in it["choices"])
    # the multi-token task: 3 words per choice, distractors differ from the gold in every word
    for it in tasks["synth_birthdate"]:
        gold = it["choices"][it["gold"]].split()
        assert len(gold) == 3
        for j, c in enumerate(it["choices"]):
            if j != it["gold"]:
                assert all(a != b for a, b in zip(c.split(), gold))


def test_write_and_load_tasks_round_trip(tmp_path, world, tasks):
    paths = syn.write_world(world, tmp_path)
    loaded = syn.load_tasks(paths["tasks"])
    assert sorted(loaded) == sorted(syn.TASKS)
    for task, df in loaded.items():
        assert list(df.columns[:4]) == ["doc_id", "context", "choices", "gold"]
        assert df.to_dict("records") == tasks[task]
        cfg = yaml.safe_load((paths["tasks"] / f"{task}.yaml").read_text())
        assert cfg == {**syn.task_yaml(task, f"{task}.jsonl")}
        assert cfg["dataset_kwargs"]["data_files"]["test"] == f"{task}.jsonl"
        assert cfg["output_type"] == "multiple_choice" and cfg["target_delimiter"] == " "
    assert (tmp_path / "corpus.txt").read_text().count("\n") == len(syn.corpus_lines(world))
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["config"]["seed"] == SMALL.seed and len(meta["people"]) == SMALL.n_people


def test_load_tasks_names_file_and_line(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text(json.dumps({"doc_id": 0, "context": "a", "choices": ["x", "y"], "gold": 0}) + "\n"
                   + json.dumps({"doc_id": 1, "context": "a", "choices": ["x", "y"], "gold": 2}) + "\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:2: 'gold' = 2"):
        syn.load_tasks(tmp_path)
    bad.write_text(json.dumps({"doc_id": 0, "context": "a", "choices": ["x", ""], "gold": 0}) + "\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:1: 'choices'"):
        syn.load_tasks(tmp_path)
    bad.write_text(json.dumps({"doc_id": 0, "choices": ["x", "y"], "gold": 0}) + "\n")
    with pytest.raises(ValueError, match="lacks field 'context'"):
        syn.load_tasks(tmp_path)
    with pytest.raises(FileNotFoundError):
        syn.load_tasks(tmp_path / "nowhere")


@pytest.mark.parametrize("kw, msg", [
    (dict(k=3), "K >= 4"),
    (dict(k=13), "12 months"),
    (dict(n_cities=3), "n_cities"),
    (dict(n_people=5), "n_people"),
    (dict(exposures=0), "exposures"),
    (dict(two_hop_train_frac=1.0), "two_hop_train_frac"),
])
def test_bad_world_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        syn.generate_world(syn.WorldConfig(**kw))


@settings(max_examples=15, deadline=None)
@given(n_people=st.integers(12, 60), k=st.integers(4, 6), seed=st.integers(0, 10_000))
def test_random_worlds_give_valid_items(n_people, k, seed):
    cfg = syn.WorldConfig(n_people=n_people, k=k, exposures=1, company_exposures=1, n_items=20, seed=seed)
    w = syn.generate_world(cfg)
    assert w.people["name"].is_unique
    for items in syn.make_tasks(w).values():
        assert 1 <= len(items) <= 20
        for it in items:
            assert len(it["choices"]) == k and len(set(it["choices"])) == k
    for it in syn.make_tasks(w)["synth_onehop"]:
        row = w.people.set_index("name").loc[it["context"].split(" was")[0]] if " was born in" in it["context"] \
            else None
        if row is not None:
            assert it["choices"][it["gold"]] == row["birth_city"]


def test_distractors_are_real_values_of_the_same_kind(world, tasks):
    """Choices the corpus never pairs the same way cannot be ruled out by word statistics alone."""
    dates = set(world.people["birth_date"])
    hq = set(world.companies["hq_city"])
    for it in tasks["synth_birthdate"]:
        assert set(it["choices"]) <= dates
    for it in tasks["synth_twohop"]:
        assert set(it["choices"]) <= hq
    for it in tasks["synth_onehop"]:
        pool = set(world.pools[it["attribute"]])
        assert set(it["choices"]) <= pool

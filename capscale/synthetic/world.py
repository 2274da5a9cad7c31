"""A deterministic synthetic micro-world: a biography corpus and multiple-choice tasks about it.

In the spirit of Allen-Zhu & Li, *Physics of Language Models: Part 3.3, Knowledge Capacity Scaling
Laws* (arXiv 2404.05405): a population of invented people, each with a few attributes (birth city,
birth date, university, major, employer) and one relation (the employer, a company, has a
headquarters city). The pretraining corpus states every fact in biography-style sentences with
several phrasings; the tasks ask about those facts.

World parameters (:class:`WorldConfig`)
--------------------------------------
``n_people``      people in the world (each has 5 attributes, so 5 facts per person)
``n_cities``, ``n_universities``, ``n_majors``, ``n_companies``, ``n_years``
                  sizes of the value pools (all names are invented lower-case words)
``exposures``     how many biographies of each person the corpus holds; every biography states
                  each of the person's 5 facts once, with a randomly chosen phrasing (3 per
                  attribute) and the sentences in a random order, so every fact is seen exactly
                  ``exposures`` times
``company_exposures``
                  how many times each company's headquarters sentence appears
``two_hop_train_frac``
                  fraction of the people for whom the corpus also states the composed fact
                  ("X works for a company headquartered in Y"); the two-hop task asks only the others
``n_items``       items per task (capped by the people available: ``n_people`` for the one-hop and
                  birth-date tasks, the people outside the two-hop training half for the two-hop
                  task); ``k`` choices per item (K >= 4)
``seed``          every random choice derives from it: same config, same world, same files

Tasks (all cloze-style: ``context`` is the prefix of a corpus sentence, a choice's continuation is
``" " + choice``; held-out items only ask facts the corpus states)

``synth_onehop``  one-hop attribute recall (birth city, university, major or employer; one
                  single-word answer). Accuracy should rise smoothly with model size.
``synth_twohop``  composition: "X works for a company headquartered in" -> the city. Each item's two
                  facts (X's employer, the employer's headquarters) are in the corpus, the composed
                  sentence is not (it is for the other ``two_hop_train_frac`` of the people).
                  Distractors are headquarters cities of other companies.
``synth_birthdate`` multi-token answers: the full birth date "month day year" (3 words). Distractors
                  are other people's birth dates that differ from the gold in all three words (so
                  that word-pair statistics of the corpus cannot tell the gold apart). Exact match (greedy generation of all 3
                  words) needs every word right, so it looks sharp, while the summed log-likelihood
                  improves smoothly.

Files (``write_world``)
-----------------------
``corpus.txt``                one biography per line (lower case, words and " ." separated by spaces)
``world.json``                the config and every fact (ground truth)
``tasks/<task>.jsonl``        ``{"doc_id": int, "context": str, "choices": [str, ...], "gold": int}``
``tasks/<task>.yaml``         an lm-eval task config for the JSONL next to it
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from capscale._io import atomic_write_text, write_json

__all__ = [
    "WorldConfig",
    "World",
    "TASKS",
    "generate_world",
    "corpus_lines",
    "make_tasks",
    "write_world",
    "write_tasks",
    "load_tasks",
    "task_yaml",
]

TASKS = ["synth_onehop", "synth_twohop", "synth_birthdate"]

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]

#: Phrasings per attribute; ``{n}`` is the person's full name, ``{v}`` the value (always at the end).
TEMPLATES: dict[str, list[str]] = {
    "birth_city": ["{n} was born in {v} .", "{n} came into the world in {v} .", "the birthplace of {n} is {v} ."],
    "birth_date": ["{n} was born on {v} .", "the birth date of {n} is {v} .", "{n} entered life on {v} ."],
    "university": ["{n} studied at {v} .", "{n} graduated from {v} .", "the alma mater of {n} is {v} ."],
    "major": ["{n} majored in {v} .", "the field of study of {n} was {v} .", "{n} earned a degree in {v} ."],
    "employer": ["{n} works for {v} .", "{n} is employed by {v} .", "the employer of {n} is {v} ."],
}
COMPANY_TEMPLATES = ["{c} is headquartered in {v} .", "the headquarters of {c} are in {v} ."]
TWO_HOP_TEMPLATE = "{n} works for a company headquartered in {v} ."
ONE_HOP_ATTRS = ["birth_city", "university", "major", "employer"]
ATTRIBUTES = list(TEMPLATES)

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "m"]


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of a synthetic world (see the module docstring)."""

    n_people: int = 250
    n_cities: int = 30
    n_universities: int = 20
    n_majors: int = 20
    n_companies: int = 25
    n_years: int = 40
    exposures: int = 64
    company_exposures: int = 200
    two_hop_train_frac: float = 0.5
    n_items: int = 250
    k: int = 4
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the parameter if the world cannot give K-choice tasks."""
        if self.k < 4:
            raise ValueError(f"WorldConfig.k = {self.k}: the tasks need K >= 4 choices")
        if self.k > 12:
            raise ValueError(f"WorldConfig.k = {self.k}: birth-date distractors need distinct months, so K <= "
                             "12 months")
        for name in ("n_cities", "n_universities", "n_majors", "n_companies", "n_years"):
            if getattr(self, name) < self.k:
                raise ValueError(f"WorldConfig.{name} = {getattr(self, name)} is smaller than k = {self.k}: "
                                 "not enough distinct distractors")
        if self.n_people < 2 * self.k:
            raise ValueError(f"WorldConfig.n_people = {self.n_people} is too small (need >= {2 * self.k})")
        if self.exposures < 1:
            raise ValueError(f"WorldConfig.exposures = {self.exposures} must be >= 1")
        if not 0.0 <= self.two_hop_train_frac < 1.0:
            raise ValueError(f"WorldConfig.two_hop_train_frac = {self.two_hop_train_frac} must be in [0, 1)")
        if self.n_items < 1:
            raise ValueError(f"WorldConfig.n_items = {self.n_items} must be >= 1")
        n_test = self.n_people - int(round(self.two_hop_train_frac * self.n_people))
        if n_test < 1:
            raise ValueError("WorldConfig: no people left for the two-hop task")


@dataclass
class World:
    """A generated world: the config, value pools and one row per person (ground truth)."""

    config: WorldConfig
    people: pd.DataFrame  # name, birth_city, birth_date, university, major, employer, two_hop_in_corpus
    companies: pd.DataFrame  # company, hq_city
    pools: dict[str, list[str]]


def _words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` new invented pronounceable words (2-3 syllables), distinct from ``taken``."""
    out: list[str] = []
    while len(out) < n:
        syl = int(rng.integers(2, 4))
        w = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                    for _ in range(syl)) + _CODAS[rng.integers(len(_CODAS))]
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def generate_world(config: WorldConfig | None = None) -> World:
    """Generate the world for ``config`` (deterministic in ``config.seed``)."""
    cfg = config or WorldConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    taken = set(MONTHS) | {w for t in sum(TEMPLATES.values(), []) + COMPANY_TEMPLATES + [TWO_HOP_TEMPLATE]
                           for w in t.split()}
    n_first = n_last = int(np.ceil(np.sqrt(cfg.n_people * 2))) + 2
    first, last = _words(rng, n_first, taken), _words(rng, n_last, taken)
    pools = {
        "birth_city": _words(rng, cfg.n_cities, taken),
        "university": _words(rng, cfg.n_universities, taken),
        "major": _words(rng, cfg.n_majors, taken),
        "employer": _words(rng, cfg.n_companies, taken),
    }
    pairs = rng.permutation(n_first * n_last)[: cfg.n_people]
    names = [f"{first[p // n_last]} {last[p % n_last]}" for p in pairs]
    years = list(range(1950, 1950 + cfg.n_years))
    people = pd.DataFrame({
        "name": names,
        "birth_city": [pools["birth_city"][i] for i in rng.integers(cfg.n_cities, size=cfg.n_people)],
        "birth_date": [f"{MONTHS[m]} {d} {years[y]}" for m, d, y in zip(
            rng.integers(12, size=cfg.n_people), rng.integers(1, 29, size=cfg.n_people),
            rng.integers(cfg.n_years, size=cfg.n_people))],
        "university": [pools["university"][i] for i in rng.integers(cfg.n_universities, size=cfg.n_people)],
        "major": [pools["major"][i] for i in rng.integers(cfg.n_majors, size=cfg.n_people)],
        "employer": [pools["employer"][i] for i in rng.integers(cfg.n_companies, size=cfg.n_people)],
    })
    n_train = int(round(cfg.two_hop_train_frac * cfg.n_people))
    flag = np.zeros(cfg.n_people, dtype=bool)
    flag[rng.permutation(cfg.n_people)[:n_train]] = True
    people["two_hop_in_corpus"] = flag
    companies = pd.DataFrame({
        "company": pools["employer"],
        "hq_city": [pools["birth_city"][i] for i in rng.integers(cfg.n_cities, size=cfg.n_companies)],
    })
    return World(cfg, people, companies, pools)


def corpus_lines(world: World) -> list[str]:
    """The pretraining corpus, one document per entry, in training order.

    ``exposures`` biographies per person (each states the 5 facts once, random phrasing, random
    sentence order; people in the two-hop training half also get the composed sentence), plus
    ``company_exposures`` headquarters sentences per company, all shuffled together.
    """
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 1])
    hq = dict(zip(world.companies["company"], world.companies["hq_city"]))
    docs: list[str] = []
    for row in world.people.itertuples(index=False):
        for _ in range(cfg.exposures):
            sents = [TEMPLATES[a][rng.integers(len(TEMPLATES[a]))].format(n=row.name, v=getattr(row, a))
                     for a in ATTRIBUTES]
            if row.two_hop_in_corpus:
                sents.append(TWO_HOP_TEMPLATE.format(n=row.name, v=hq[row.employer]))
            docs.append(" ".join(sents[i] for i in rng.permutation(len(sents))))
    for c, city in hq.items():
        for _ in range(cfg.company_exposures):
            docs.append(COMPANY_TEMPLATES[rng.integers(len(COMPANY_TEMPLATES))].format(c=c, v=city))
    return [docs[i] for i in rng.permutation(len(docs))]


def _prefix(template: str, **kw: str) -> str:
    return template.replace(" {v} .", "").format(**kw)


def _choices(rng: np.random.Generator, gold: str, pool: list[str], k: int) -> tuple[list[str], int]:
    others = [v for v in pool if v != gold]
    picks = [others[i] for i in rng.choice(len(others), size=k - 1, replace=False)]
    pos = int(rng.integers(k))
    return picks[:pos] + [gold] + picks[pos:], pos


def make_tasks(world: World) -> dict[str, list[dict]]:
    """The multiple-choice items of every task, ``{task: [item, ...]}`` (see module docstring)."""
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 2])
    ppl = world.people
    hq = dict(zip(world.companies["company"], world.companies["hq_city"]))
    out: dict[str, list[dict]] = {t: [] for t in TASKS}

    idx = rng.choice(len(ppl), size=min(cfg.n_items, len(ppl)), replace=False)
    for doc_id, i in enumerate(idx):
        a = ONE_HOP_ATTRS[doc_id % len(ONE_HOP_ATTRS)]
        row = ppl.iloc[i]
        tpl = TEMPLATES[a][rng.integers(len(TEMPLATES[a]))]
        ch, gold = _choices(rng, row[a], world.pools[a], cfg.k)
        out["synth_onehop"].append(dict(doc_id=doc_id, context=_prefix(tpl, n=row["name"]), choices=ch,
                                        gold=gold, attribute=a))

    # distractors: headquarters cities of other companies (a city that is no company's headquarters
    # could be ruled out without knowing the person)
    hq_cities = sorted(set(hq.values()))
    if len(hq_cities) < cfg.k:
        raise ValueError(f"only {len(hq_cities)} distinct headquarters cities, fewer than k = {cfg.k}: raise "
                         "n_companies or n_cities")
    test = np.flatnonzero(~ppl["two_hop_in_corpus"].to_numpy())
    idx = rng.choice(test, size=min(cfg.n_items, len(test)), replace=False)
    for doc_id, i in enumerate(idx):
        row = ppl.iloc[i]
        ch, gold = _choices(rng, hq[row["employer"]], hq_cities, cfg.k)
        out["synth_twohop"].append(dict(doc_id=doc_id, context=_prefix(TWO_HOP_TEMPLATE, n=row["name"]),
                                        choices=ch, gold=gold, attribute="employer_hq"))

    # distractors: birth dates of other people that differ from the gold in all three words, so every
    # choice (and every word pair in it) is a date the corpus states; only knowing the person helps
    idx = rng.choice(len(ppl), size=min(cfg.n_items, len(ppl)), replace=False)
    dates = [d.split() for d in ppl["birth_date"]]
    for doc_id, i in enumerate(idx):
        row = ppl.iloc[i]
        g = dates[i]
        cands = sorted({" ".join(d) for d in dates if all(a != b for a, b in zip(d, g))})
        if len(cands) < cfg.k - 1:
            raise ValueError(f"person {row['name']!r}: fewer than k - 1 = {cfg.k - 1} other birth dates differ "
                             "from theirs in every word; raise n_people")
        ch, pos = _choices(rng, row["birth_date"], cands + [row["birth_date"]], cfg.k)
        tpl = TEMPLATES["birth_date"][rng.integers(len(TEMPLATES["birth_date"]))]
        out["synth_birthdate"].append(dict(doc_id=doc_id, context=_prefix(tpl, n=row["name"]), choices=ch,
                                           gold=pos, attribute="birth_date"))
    return out


def task_yaml(task: str, jsonl_name: str) -> dict:
    """The lm-eval task config (as a dict) for a JSONL file of items next to it."""
    return {
        "task": task,
        "output_type": "multiple_choice",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": jsonl_name}},
        "test_split": "test",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def write_tasks(tasks: dict[str, list[dict]], directory: str | os.PathLike) -> list[Path]:
    """Write ``<task>.jsonl`` and ``<task>.yaml`` per task into ``directory``; returns the JSONL paths.

    Each JSONL line is ``{"doc_id", "context", "choices", "gold"}`` plus the informative
    ``attribute`` field. The YAML names the JSONL by its bare file name (``data_files`` relative to
    the YAML's folder, as ``capscale eval --include-path`` expects).
    """
    d = Path(directory)
    paths = []
    for task, items in tasks.items():
        p = d / f"{task}.jsonl"
        atomic_write_text(p, "".join(json.dumps(it, sort_keys=False) + "\n" for it in items))
        atomic_write_text(d / f"{task}.yaml", yaml.safe_dump(task_yaml(task, f"{task}.jsonl"), sort_keys=False))
        paths.append(p)
    return paths


def write_world(world: World, directory: str | os.PathLike) -> dict[str, Path]:
    """Write ``corpus.txt``, ``world.json`` and ``tasks/`` for ``world``; returns their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    corpus = d / "corpus.txt"
    atomic_write_text(corpus, "\n".join(corpus_lines(world)) + "\n")
    meta = {"config": dataclasses.asdict(world.config), "people": world.people.to_dict("records"),
            "companies": world.companies.to_dict("records")}
    write_json(d / "world.json", meta)
    write_tasks(make_tasks(world), d / "tasks")
    return {"corpus": corpus, "world": d / "world.json", "tasks": d / "tasks"}


def load_tasks(directory: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read every ``<task>.jsonl`` in ``directory`` into a DataFrame (``doc_id, context, choices, gold``).

    Raises ``FileNotFoundError`` if there is none and ``ValueError`` naming file and line for a
    malformed item (missing field, gold out of range, fewer than 2 choices, empty choice).
    """
    d = Path(directory)
    files = sorted(d.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no task files (*.jsonl) in {d}")
    out: dict[str, pd.DataFrame] = {}
    for f in files:
        rows = []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                it = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{f}:{n}: not valid JSON ({e})") from e
            for key in ("doc_id", "context", "choices", "gold"):
                if key not in it:
                    raise ValueError(f"{f}:{n}: item lacks field {key!r}")
            ch = it["choices"]
            if not isinstance(ch, list) or len(ch) < 2 or any(not isinstance(c, str) or not c for c in ch):
                raise ValueError(f"{f}:{n}: 'choices' must be a list of >= 2 non-empty strings")
            if not isinstance(it["gold"], int) or not 0 <= it["gold"] < len(ch):
                raise ValueError(f"{f}:{n}: 'gold' = {it['gold']!r} is not an index into {len(ch)} choices")
            rows.append(it)
        df = pd.DataFrame(rows)
        if df["doc_id"].duplicated().any():
            raise ValueError(f"{f}: duplicate doc_id {df.loc[df['doc_id'].duplicated(), 'doc_id'].iloc[0]!r}")
        out[f.stem] = df
    return out

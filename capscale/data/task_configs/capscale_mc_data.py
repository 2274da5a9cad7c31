"""Loaders for capscale's local task YAMLs (``capscale/data/task_configs/*.yaml``): real MC items read in place.

Each YAML in this folder names one of these functions as its ``custom_dataset``. lm-eval calls it as
``fn(**metadata, **dataset_kwargs)``; the data root comes from the ``capscale_data_dir`` metadata key (set by
capscale from ``--data-dir``; with lm-eval's own CLI pass ``--metadata '{"capscale_data_dir": "DIR"}'``) or
else from the ``CAPSCALE_DATA`` environment variable. The root may be the ``mc`` folder itself or its parent
(the layout is in this folder's ``README.md``). Nothing is downloaded and nothing is copied.

Every loader returns a ``datasets.DatasetDict`` whose documents have the same fields as the Hugging Face dataset
that lm-eval's task of the same name reads, so the YAMLs keep lm-eval's own ``doc_to_text`` /
``doc_to_choice`` / ``doc_to_target`` templates unchanged.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

DATA_ENV = "CAPSCALE_DATA"
META_KEY = "capscale_data_dir"
log = logging.getLogger("capscale.data.tasks")


def mc_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding the MC task folders (``arc_easy/``, ``piqa/``, ...).

    Parameters
    ----------
    data_dir : path-like, optional
        The ``mc`` folder or its parent; defaults to ``$CAPSCALE_DATA``.
    """
    raw = data_dir or os.environ.get(DATA_ENV)
    if not raw:
        raise FileNotFoundError(
            f"no data root: pass --data-dir (metadata key {META_KEY!r}) or set ${DATA_ENV} to the folder "
            "holding the multiple-choice items (a folder mc/ or its parent)")
    root = Path(raw).expanduser()
    if (root / "mc").is_dir():
        root = root / "mc"
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} is not a directory")
    return root


def _file(kwargs: dict[str, Any], *parts: str) -> Path:
    p = mc_root(kwargs.get(META_KEY)).joinpath(*parts)
    if not p.is_file():
        raise FileNotFoundError(f"task data file {str(p)!r} not found under the data root")
    return p


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i + 1}: invalid JSON ({e})") from e
    return out


def _dd(**splits: list[dict[str, Any]]):
    import datasets

    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


# ---------------------------------------------------------------------------------------------- ARC


def _arc_docs(path: Path) -> list[dict[str, Any]]:
    docs = []
    for r in _jsonl(path):
        ch = r["question"]["choices"]
        docs.append({"id": r["id"], "question": r["question"]["stem"],
                     "choices": {"text": [c["text"] for c in ch], "label": [c["label"] for c in ch]},
                     "answerKey": r["answerKey"]})
    return docs


def arc_easy(**kwargs: Any):
    """ARC-Easy as ``allenai/ai2_arc`` (ARC-Easy): train / validation / test."""
    return _dd(train=_arc_docs(_file(kwargs, "arc_easy", "train.jsonl")),
               validation=_arc_docs(_file(kwargs, "arc_easy", "dev.jsonl")),
               test=_arc_docs(_file(kwargs, "arc_easy", "test.jsonl")))


def arc_challenge(**kwargs: Any):
    """ARC-Challenge as ``allenai/ai2_arc`` (ARC-Challenge); test has 1,170 of 1,172 items (see MANIFEST)."""
    return _dd(train=_arc_docs(_file(kwargs, "arc_challenge", "train.jsonl")),
               validation=_arc_docs(_file(kwargs, "arc_challenge", "dev.jsonl")),
               test=_arc_docs(_file(kwargs, "arc_challenge", "test.jsonl")))


# --------------------------------------------------------------------------------------------- PIQA


def piqa(**kwargs: Any):
    """PIQA validation as ``baber/piqa`` (``goal``, ``sol1``, ``sol2``, ``label``), labels joined by line."""
    docs = _jsonl(_file(kwargs, "piqa", "valid.jsonl"))
    lab_path = _file(kwargs, "piqa", "valid-labels.lst")
    labels = [ln.strip() for ln in lab_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(labels) != len(docs):
        raise ValueError(f"{lab_path}: {len(labels)} labels for {len(docs)} items in valid.jsonl")
    return _dd(validation=[{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)}
                           for d, y in zip(docs, labels, strict=True)])


# --------------------------------------------------------------------------------------- OpenBookQA

_OBQA_MARK = re.compile(r"\(([A-D])\) ")


def _obqa_docs(path: Path) -> list[dict[str, Any]]:
    docs, bad = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            parts = _OBQA_MARK.split(r["Choices"])
            labels, texts = parts[1::2], [t.strip() for t in parts[2::2]]
            if labels != ["A", "B", "C", "D"]:
                bad.append(r["ID"])
                continue
            docs.append({"id": r["ID"], "question_stem": r["Question Stem"],
                         "choices": {"text": texts, "label": labels}, "answerKey": r["Answer Key"].strip()})
    if bad:
        log.warning("%s: left out %d item(s) whose choices do not parse as (A)-(D): %s", path, len(bad), bad[:10])
    return docs


def openbookqa(**kwargs: Any):
    """OpenBookQA Main as ``allenai/openbookqa`` (main): train / validation / test.

    Items whose choices string does not parse into exactly (A)-(D) are left out (one train item, ``12-1145``).
    """
    return _dd(train=_obqa_docs(_file(kwargs, "openbookqa", "train.tsv")),
               validation=_obqa_docs(_file(kwargs, "openbookqa", "dev.tsv")),
               test=_obqa_docs(_file(kwargs, "openbookqa", "test.tsv")))


# --------------------------------------------------------------------------------------- WinoGrande


def winogrande(**kwargs: Any):
    """WinoGrande dev as ``allenai/winogrande`` validation (``sentence``, ``option1/2``, ``answer``)."""
    docs = _jsonl(_file(kwargs, "winogrande", "dev.jsonl"))
    return _dd(validation=[{k: d[k] for k in ("sentence", "option1", "option2", "answer")} for d in docs])


def winogrande_doc_to_text(doc: dict[str, Any]) -> int:
    """Gold index (multiple-input task: the contexts vary, lm-eval's ``preprocess_winogrande``)."""
    return {"1": 0, "2": 1}[doc["answer"]]


def winogrande_doc_to_target(doc: dict[str, Any]) -> str:
    """The shared continuation: the sentence after the blank, stripped."""
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def winogrande_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The per-choice contexts: the sentence up to the blank with each option filled in."""
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


# --------------------------------------------------------------------------------------- Social IQa


def social_iqa(**kwargs: Any):
    """Social IQa dev as ``lighteval/siqa`` validation (``label`` "1"/"2"/"3" from the letter ``correct``)."""
    docs = _jsonl(_file(kwargs, "social_iqa", "dev.jsonl"))
    out = []
    for d in docs:
        out.append({"context": d["context"], "question": d["question"], "answerA": d["answerA"],
                    "answerB": d["answerB"], "answerC": d["answerC"], "label": str("ABC".index(d["correct"]) + 1)})
    return _dd(validation=out)


# --------------------------------------------------------------------------------------------- COPA


def copa(**kwargs: Any):
    """COPA dev (Balanced-COPA ids 1-500) as ``super_glue`` copa validation."""
    path = _file(kwargs, "copa", "balanced-copa-dev-all.xml")
    root = ET.parse(path).getroot()
    docs = []
    for it in root.iter("item"):
        i = int(it.get("id"))
        if i > 500:
            continue
        docs.append({"premise": it.findtext("p"), "choice1": it.findtext("a1"), "choice2": it.findtext("a2"),
                     "question": it.get("asks-for"), "idx": i,
                     "label": int(it.get("most-plausible-alternative")) - 1})
    docs.sort(key=lambda d: d["idx"])
    return _dd(validation=docs)


def _copa_convert(choice: str) -> str:
    return choice[0].lower() + choice[1:]


def copa_doc_to_text(doc: dict[str, Any]) -> str:
    """Premise without its final period + " because" / " therefore" (lm-eval ``super_glue/copa/utils.py``)."""
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    return doc["premise"].strip()[:-1] + f" {connector}"


def copa_doc_to_target(doc: dict[str, Any]) -> str:
    correct = doc["choice1"] if doc["label"] == 0 else doc["choice2"]
    return " " + _copa_convert(correct)


def copa_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """As lm-eval: each choice carries a leading space (with the default delimiter the continuation has two)."""
    return [" " + _copa_convert(doc["choice1"]), " " + _copa_convert(doc["choice2"])]


# --------------------------------------------------------------------------------------------- MMLU


def _mmlu_docs(path: Path, subject: str) -> list[dict[str, Any]]:
    docs = []
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            docs.append({"question": r["question"], "subject": subject,
                         "choices": [r[f"choice{j}"] for j in range(4)], "answer": int(r["answer"])})
    return docs


def mmlu(subject: str = "", **kwargs: Any):
    """One MMLU subject as ``cais/mmlu``: ``test`` (evaluated) and ``dev`` (5 few-shot exemplars)."""
    if not subject:
        raise ValueError("mmlu loader needs dataset_kwargs.subject")
    return _dd(test=_mmlu_docs(_file(kwargs, "mmlu", "test", f"{subject}_test.csv"), subject),
               dev=_mmlu_docs(_file(kwargs, "mmlu", "dev", f"{subject}_dev.csv"), subject))


# ------------------------------------------------------------------------------------------ LAMBADA


def lambada(**kwargs: Any):
    """LAMBADA (OpenAI detokenised test) as ``EleutherAI/lambada_openai``: field ``text``."""
    return _dd(test=[{"text": d["text"]} for d in _jsonl(_file(kwargs, "lambada", "lambada_test.jsonl"))])


# ------------------------------------------------------------------------------------ BLiMP, Zorro


def blimp(paradigm: str = "", **kwargs: Any):
    """One BLiMP paradigm as ``nyu-mll/blimp`` (``sentence_good``, ``sentence_bad``)."""
    if not paradigm:
        raise ValueError("blimp loader needs dataset_kwargs.paradigm")
    docs = _jsonl(_file(kwargs, "blimp", f"{paradigm}.jsonl"))
    return _dd(train=[{"sentence_good": d["sentence_good"], "sentence_bad": d["sentence_bad"],
                       "pairID": str(d.get("pairID", i))} for i, d in enumerate(docs)])


def zorro(paradigm: str = "", **kwargs: Any):
    """One Zorro paradigm: consecutive lines are (ungrammatical, grammatical) pairs; order kept, never sorted."""
    if not paradigm:
        raise ValueError("zorro loader needs dataset_kwargs.paradigm")
    path = _file(kwargs, "zorro", f"{paradigm}.txt")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) % 2:
        raise ValueError(f"{path}: odd number of lines ({len(lines)}); Zorro files hold pairs")
    return _dd(train=[{"sentence_good": lines[i + 1], "sentence_bad": lines[i]} for i in range(0, len(lines), 2)])

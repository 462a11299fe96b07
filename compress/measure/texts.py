"""The texts the library reads: the two held-out evaluation sets, the default healing corpus, and the
near-duplicate check that keeps them apart (assets/eval/README.md, assets/heal/README.md say where each comes from).

Evaluation sets (never healed on, never used for calibration or choosing anything):
  project  255 everyday sentences and 51 queries written by this project (assets/eval/sentences.tsv, queries.txt)
  docs     real technical text nobody on the project wrote: sentences of the CPython standard library's docstrings
           (assets/eval/docs.tsv, docs_queries.txt; built by python -m compress.measure.make_texts)
Healing corpus (encoders): the project's 2,247 sentences, then sentences of Python's language reference and of
numpy / scipy / pandas docstrings, so a healed model meets more than one style.
"""
import csv
import re
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EVAL_SETS = {  # name -> (sentences file, queries file, what it is, its short name in the app)
    "project": ("sentences.tsv", "queries.txt", "255 everyday sentences written by this project", "our sentences"),
    "docs": ("docs.tsv", "docs_queries.txt", "557 sentences of Python standard-library docstrings, text we did "
             "not write", "Python docs"),
}
HEAL_FILES = ("sentences.txt", "reference.txt", "api.txt")  # assets/heal/, in this order


@lru_cache(maxsize=len(EVAL_SETS))
def eval_set(name: str = "project") -> tuple[list[str], list[str], list[str]]:
    """(sentences, topics, queries) of a held-out evaluation set."""
    sentences_file, queries_file, *_ = EVAL_SETS[name]
    with open(ASSETS / "eval" / sentences_file, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    queries = [q.strip() for q in (ASSETS / "eval" / queries_file).read_text(encoding="utf-8").splitlines() if q.strip()]
    return [r["sentence"] for r in rows], [r["topic"] for r in rows], queries


@lru_cache(maxsize=1)
def heal_corpus() -> tuple[str, ...]:
    """The default healing text of encoders: every line of assets/heal's files, the project's sentences first."""
    return tuple(s.strip() for name in HEAL_FILES
                 for s in (ASSETS / "heal" / name).read_text(encoding="utf-8").splitlines() if s.strip())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _grams(words: list[str], n: int) -> set:
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def near_duplicates(texts, against, n: int = 4, share: float = 0.5) -> list[bool]:
    """For each text: is it one of `against` (ignoring case, spacing and punctuation), or does at least `share` of
    its word n-grams appear in one single text of `against`?"""
    exact, index = set(), defaultdict(set)
    for i, t in enumerate(against):
        w = _words(t)
        exact.add(" ".join(w))
        for g in _grams(w, n):
            index[g].add(i)
    out = []
    for t in texts:
        w = _words(t)
        grams = _grams(w, n)
        hits = Counter(i for g in grams for i in index.get(g, ()))
        out.append(" ".join(w) in exact or (bool(hits) and max(hits.values()) >= share * len(grams)))
    return out


def metric_label(key: str) -> str:
    """A quality key in words, with the evaluation set it was measured on (encoders): "fidelity · Python docs"."""
    for name, (*_, short) in EVAL_SETS.items():
        if key.endswith("_" + name):
            return f"{key.removesuffix('_' + name).replace('_', ' ')} · {short}"
    return key.replace("_", " ") + (f" · {EVAL_SETS['project'][-1]}" if key in _ENCODER_KEYS else "")


_ENCODER_KEYS = {"fidelity", "retrieval_overlap", "neighbour_agreement", "similarity_spearman"}

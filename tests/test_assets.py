"""The evaluation sets are real, varied and held out; the healing corpus never overlaps them."""
import os
import re

import compress as C
from compress.measure import general
from conftest import ROOT


def _words(texts):
    return {w for t in texts for w in re.findall(r"[a-z']+", t.lower())}


def test_eval_set_is_big_varied_and_labelled():
    sentences, topics, queries = C.eval_set()
    assert len(sentences) >= 200 and len(set(topics)) >= 10
    assert len({s.lower().strip() for s in sentences}) == len(sentences)
    assert len(_words(sentences)) >= 1500
    assert len(queries) >= 30 and not {q.lower() for q in queries} & {s.lower() for s in sentences}
    assert min(topics.count(t) for t in set(topics)) >= 10


def test_healing_text_shares_no_sentence_with_the_eval_set():
    heal = [l.strip().lower() for l in (ROOT / "assets/heal/sentences.txt").read_text().splitlines() if l.strip()]
    sentences, _, queries = C.eval_set()
    assert len(heal) >= 2000 and len(set(heal)) == len(heal)
    assert not set(heal) & {s.lower() for s in sentences + queries}


def test_second_eval_set_is_real_text_we_did_not_write_with_its_source():
    sentences, topics, queries = C.eval_set("docs")
    assert len(sentences) >= 500 and len(queries) >= 100 and len(set(topics)) >= 80
    assert len(set(sentences)) == len(sentences) and not set(queries) & set(sentences)
    readme = (ROOT / "assets/eval/README.md").read_text()
    assert "docs.tsv" in readme and "PSF" in readme and "make_texts" in readme


def test_no_text_of_either_eval_set_is_in_the_healing_corpus():
    """Exact or near-duplicate (half of a healing text's word 4-grams found in one evaluation text)."""
    heal = C.heal_corpus()
    evals = [t for name in C.EVAL_SETS for t in C.eval_set(name)[0] + C.eval_set(name)[2]]
    assert len(heal) >= 5000 and len(set(heal)) > 0.99 * len(heal)
    assert not any(C.near_duplicates(heal, evals))
    for f in ("sentences.txt", "reference.txt", "api.txt"):  # each source is in, and said where it comes from
        assert (ROOT / "assets/heal" / f).stat().st_size > 50_000 and f in (ROOT / "assets/heal/README.md").read_text()
    if (general.WORDNET / "data.noun").is_file() or os.environ.get("CI") == "true":  # the general corpus too
        assert not any(C.near_duplicates(C.general_corpus(), evals))


def test_near_duplicates_catches_copies_and_close_rewrites_only():
    against = ["Return a new dictionary with keys from the given iterable and values set to value."]
    texts = ["return a NEW dictionary with keys from the given iterable, and values set to value",  # a copy
             "Return a new dictionary with keys from the given iterable and all values set to None.",  # a rewrite
             "Return the list of keys of this dictionary, in insertion order."]  # another sentence
    assert C.near_duplicates(texts, against) == [True, True, False]

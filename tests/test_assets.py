"""The evaluation set is real, varied and held out; the healing corpus never overlaps it."""
import re

import compress as C
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

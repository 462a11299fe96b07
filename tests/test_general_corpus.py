"""The general healing corpus (compress/measure/general.py): WordNet 3.0's glosses made sentences, built the same
way every time, kept apart from both evaluation sets, cached, refused in one line without its package; and the
recipe's heal_text choosing what healing trains on."""
import os

import pytest

import compress as C
from compress.measure import general
from compress.techniques.heal import heal_texts
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
needs_wordnet = pytest.mark.skipif(not (general.WORDNET / "data.noun").is_file() and os.environ.get("CI") != "true",
                                   reason="WordNet is not installed: run `make wordnet` (under CI=true: a failure)")


@needs_wordnet
def test_the_corpus_builds_the_same_every_time_and_is_large(tmp_path, monkeypatch):
    built = general.build()
    assert general.sha256(general.build()) == general.sha256(built)
    assert len(built) >= 50_000 and len({s.lower() for s in built}) == len(built)
    assert all(6 <= len(s.split()) <= 40 and s[0].isupper() and s[-1] in ".!?" for s in built)
    monkeypatch.setattr(general, "CACHE", tmp_path)  # the cache writes it once, then reads it back as written
    general.general_corpus.cache_clear()
    try:
        assert list(general.general_corpus()) == built and (tmp_path / "general.txt").is_file()
        assert general.sha256(built) in (tmp_path / "general.json").read_text()
        general.general_corpus.cache_clear()
        assert list(general.general_corpus()) == built
    finally:
        general.general_corpus.cache_clear()


@needs_wordnet
def test_no_sentence_is_a_near_duplicate_of_either_eval_set():
    corpus = C.general_corpus()
    evals = [t for name in C.EVAL_SETS for t in C.eval_set(name)[0] + C.eval_set(name)[2]]
    assert not any(C.near_duplicates(corpus, evals))
    readme = (ROOT / "assets/heal/README.md").read_text()
    assert "wordnet-base" in readme and "WordNet 3.0" in readme and general.sha256(corpus) in readme


def test_sentences_from_one_synset_line(tmp_path, monkeypatch):
    line = ('00217593 04 n 01 kill 1 002 @ 00217014 n 0000 | the destruction of an enemy plane or ship or tank or '
            'missile; "the pilot reported two kills during the mission"  \n')
    (tmp_path / "data.noun").write_text("  1 This software and database is being provided to you  \n" + line)
    ((pos, lemma, definition, examples),) = general.synsets(tmp_path / "data.noun")
    assert (pos, lemma) == ("n", "kill") and examples == ["the pilot reported two kills during the mission"]
    assert general.sentences(pos, lemma, definition, examples) == [
        "The pilot reported two kills during the mission.",
        "A kill is the destruction of an enemy plane or ship or tank or missile."]
    assert general.sentences("v", "wreck", "smash or break forcefully", []) == ["To wreck is to smash or break forcefully."]


def test_without_the_package_one_line_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(general, "WORDNET", tmp_path / "nowhere")
    general.general_corpus.cache_clear()
    try:
        with pytest.raises(C.CompressError, match="make wordnet") as e:
            general.general_corpus()
        assert "\n" not in str(e.value) and "wordnet-base" in str(e.value) and "nowhere" not in str(e.value)
    finally:
        general.general_corpus.cache_clear()


@needs_wordnet
def test_both_interleaves_the_two_corpora():
    styles, corpus, both = C.heal_corpus(), C.general_corpus(), general.healing_text("both")
    assert sorted(both) == sorted(styles + corpus)
    assert both[:2] == [styles[0], corpus[0]] and set(both[:200]) & set(styles) and set(both[-200:]) & set(styles)


@needs_wordnet
def test_heal_text_general_heals_on_the_general_corpus(tiny_bert):
    encoder = C.ModelBundle(None, "x", tiny_bert.adapter, None, "", {})
    assert heal_texts(encoder, "general") == list(C.general_corpus()) and heal_texts(encoder) == list(C.heal_corpus())
    r = C.Recipe(heal_steps=2, heal_text="general")
    assert C.Recipe.from_params(r.to_params()) == r and "on general" in r.describe()
    healed = C.compress(tiny_bert, r)
    assert healed.applied["heal"]["corpus_sha256"] == general.sha256(C.general_corpus())
    assert healed.recipe.heal_text == "general" and healed.recipe.heal_corpus == ""  # the default text: no digest
    from compress.outputs.export import card
    assert card(healed)["heal"]["corpus_sha256"] == general.sha256(C.general_corpus())
    styles = C.compress(tiny_bert, C.Recipe(heal_steps=2))
    assert styles.applied["heal"]["corpus_sha256"] == general.sha256(C.heal_corpus())

"""The general healing corpus (compress/measure/general.py): WordNet 3.0's glosses made sentences, built the same
way every time, kept apart from both evaluation sets, cached, refused in one line without its package; and the
recipe's heal_text choosing what healing trains on."""
import os

import pytest

import compress as C
from compress.measure import computing, corpus, general
from compress.techniques.heal import heal_texts
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
needs_wordnet = pytest.mark.skipif(not (general.WORDNET / "data.noun").is_file() and os.environ.get("CI") != "true",
                                   reason="WordNet is not installed: run `make wordnet` (under CI=true: a failure)")
needs_foldoc = pytest.mark.skipif(not (computing.SOURCE / "foldoc.index").is_file() and os.environ.get("CI") != "true",
                                  reason="FOLDOC is not here: run `make corpora` (under CI=true: a failure)")


@needs_wordnet
def test_the_corpus_builds_the_same_every_time_and_is_large(tmp_path, monkeypatch):
    built = general.build()
    assert general.sha256(general.build()) == general.sha256(built)
    assert len(built) >= 50_000 and len({s.lower() for s in built}) == len(built)
    assert all(6 <= len(s.split()) <= 40 and s[0].isupper() and s[-1] in ".!?" for s in built)
    monkeypatch.setattr(corpus, "CACHE", tmp_path)  # the cache writes it once, then reads it back as written
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


@needs_foldoc
def test_the_computing_corpus_builds_the_same_every_time_apart_from_the_eval_sets(tmp_path, monkeypatch):
    built = computing.build()
    assert computing.build() == built and len(built) >= 20_000 and len({s.lower() for s in built}) == len(built)
    assert all(corpus.keep(s) and s[-1] in ".!?" and not set(s) & set('{}"[]@') for s in built)
    evals = [t for name in C.EVAL_SETS for t in C.eval_set(name)[0] + C.eval_set(name)[2]]
    assert not any(C.near_duplicates(built, evals))
    readme = " ".join((ROOT / "assets/heal/README.md").read_text().split())
    assert "dict-foldoc 20230119-1" in readme and "GNU Free Documentation License" in readme
    assert general.sha256(built) in readme  # the corpus CI rebuilds is the one measured
    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    computing.computing_corpus.cache_clear()
    try:
        assert list(computing.computing_corpus()) == built and (tmp_path / "computing.txt").is_file()
        assert general.sha256(built) in (tmp_path / "computing.json").read_text()
    finally:
        computing.computing_corpus.cache_clear()


def test_sentences_from_one_foldoc_entry():
    dict_text = ("linked list\n\n   <programming> (\"LL\") A {data structure} in which each element contains a "
                 "{pointer}\n   to the next element (http://example.org/x) <a@b.org>.  It forms a linear list.\n\n"
                 "   [{Jargon File}]\n\n   (2014-11-27)\n\n")
    index = "linked list\tA\t" + computing._B64[len(dict_text) // 64] + computing._B64[len(dict_text) % 64] + "\n"
    (entry,) = computing.entries(dict_text.encode(), index + index.replace("linked list", "LL"))  # one entry, two names
    assert computing.sentences(entry) == [
        "A data structure in which each element contains a pointer to the next element.", "It forms a linear list."]


def test_without_foldoc_heal_text_all_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(computing, "SOURCE", tmp_path / "nowhere")
    computing.computing_corpus.cache_clear()
    try:
        with pytest.raises(C.CompressError, match="make corpora") as e:
            general.healing_text("all")
        assert "\n" not in str(e.value) and "dict-foldoc" in str(e.value) and "nowhere" not in str(e.value)
    finally:
        computing.computing_corpus.cache_clear()


@needs_wordnet
@needs_foldoc
def test_all_interleaves_the_three_corpora_and_both_is_as_it_was():
    styles, corpus, comp = C.heal_corpus(), C.general_corpus(), computing.computing_corpus()
    every = general.healing_text("all")
    assert sorted(every) == sorted(styles + corpus + comp) and every[:3] == [styles[0], corpus[0], comp[0]]
    assert all(set(every[k:k + 300]) & set(comp) for k in range(0, len(every) - 300, len(every) // 4))
    assert general.sha256(general.healing_text("both")) in (ROOT / "assets/heal/README.md").read_text()
    r = C.Recipe(static=True, heal_steps=2, heal_text="all")
    assert C.Recipe.from_params(r.to_params()) == r and "on all" in r.describe()

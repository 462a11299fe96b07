"""Healing (compress/techniques/heal.py) on tiny random models, and the healing corpus rules."""
import copy
import json
import threading

import pytest
import torch

import compress as C
from compress.models.adapters import ADAPTERS
from compress.measure.evaluate import ASSETS, batches, eval_set
from compress.techniques.heal import _loss, dev_metric, heal, heal_texts, split_dev
from compress.models.bundle import ModelBundle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts():
    return heal_texts(_dummy_encoder())[:200]


def _dummy_encoder():  # heal_texts only asks the adapter's family
    return ModelBundle(None, "x", ADAPTERS["bert"], None, "", {})




def _student(bundle, ratio=0.25):
    spec = C.spectra(bundle)
    return C.apply_factorize(copy.deepcopy(bundle.model), C.select_ranks(spec, "ratio", ratio), spec)


def _batch_loss(student, teacher, texts):
    ids, mask = batches(teacher, texts[:32], 32)[0]
    with torch.no_grad():
        return float(_loss(student, teacher, ids, mask, 0.0, 0.0))


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_gpt"])
def test_a_few_steps_reduce_the_distillation_loss(which, texts, request):
    teacher = request.getfixturevalue(which)
    student = _student(teacher)
    before = _batch_loss(student, teacher, texts)
    r = heal(student, teacher, texts, steps=20, lr=3e-3, batch=16, eval_every=5)
    assert r.model is student and r.steps_run == 20
    assert _batch_loss(student, teacher, texts) < 0.8 * before
    assert r.metric == ("fidelity" if which == "tiny_bert" else "next_token_kl")
    assert (r.dev_after > r.dev_before) if which == "tiny_bert" else (r.dev_after < r.dev_before)
    assert r.corpus_sha256 and len(r.history) == 1 + 20 // 5
    assert "model" not in r.to_dict() and json.dumps(r.to_dict())  # what the report and the app keep
    assert all(p.requires_grad for p in student.parameters())  # as before healing: frozen ones are unfrozen again


def test_blocks_learn_around_a_2bit_table_that_stays_as_it_is(tiny_bert, texts):
    student = C.low_bit_embeddings(copy.deepcopy(tiny_bert.model), tiny_bert.adapter, 2)
    table = {k: v.clone() for k, v in student.embeddings.word_embeddings.state_dict().items()}
    r = heal(student, tiny_bert, texts, steps=20, lr=3e-3, batch=16, eval_every=5)
    assert r.dev_after > r.dev_before  # the blocks compensate for the table's rounding
    assert all(torch.equal(v, student.embeddings.word_embeddings.state_dict()[k]) for k, v in table.items())


def test_mix_joins_the_start_of_one_text_to_the_end_of_another(texts):
    from compress.techniques.heal import _mix
    pool = texts[:50]
    mixed = _mix(pool[:20], pool, 1.0, torch.Generator().manual_seed(1))
    assert mixed == _mix(pool[:20], pool, 1.0, torch.Generator().manual_seed(1))  # seeded
    assert _mix(pool[:20], pool, 0.0, torch.Generator().manual_seed(1)) == pool[:20]
    assert sum(m not in pool for m in mixed) >= 15  # mostly new sentences
    for src, m in zip(pool[:20], mixed):
        w = m.split()
        head = next(i for i in range(len(w), 0, -1) if src.split()[:i] == w[:i])  # a start of its own text ...
        assert head >= 1 and any(" ".join(w[head:]) == " ".join(o.split()[-(len(w) - head):]) or head == len(w)
                                 for o in pool)  # ... and the end of one from the pool


def test_hidden_state_matching_adds_a_term_and_heals(tiny_bert, texts):
    student = _student(tiny_bert)
    ids, mask = batches(tiny_bert, texts[:16], 16)[0]
    with torch.no_grad():
        cos_only, both = (_loss(student, tiny_bert, ids, mask, w, 0.0) for w in (0.0, 1.0))
    assert both > cos_only  # the student's hidden states differ from the teacher's: the term is positive
    r = heal(student, tiny_bert, texts, steps=6, lr=3e-3, batch=16, hidden_weight=1.0, eval_every=3)
    assert r.steps_run == 6 and r.best_step > 0 and r.dev_after > r.dev_before


def test_stop_returns_the_best_state(tiny_bert, texts):
    student = _student(tiny_bert)
    stop = threading.Event()

    def progress(d):
        assert set(d) == {"step", "steps", "loss", "dev", "dev_step", "seconds_left", "cap_left", "per_step"}
        assert d["cap_left"] is None and d["per_step"] > 0 and d["dev_step"] <= d["step"]  # no time cap here
        if d["step"] == 12:
            stop.set()

    r = heal(student, tiny_bert, texts, steps=100, lr=3e-2, batch=16, eval_every=4, progress=progress, stop=stop)
    assert r.stopped and r.steps_run == 12 and r.ended == "Stop"
    best = max(h["dev"] for h in r.history)
    assert r.dev_after == best and r.best_step == max(r.history, key=lambda h: h["dev"])["step"]
    dev = batches(tiny_bert, split_dev(texts)[1], 64)
    assert dev_metric(student, tiny_bert, dev) == pytest.approx(best, abs=1e-5)


def test_steps_and_minutes_cap(tiny_bert, texts):
    student = _student(tiny_bert)
    r = heal(student, tiny_bert, texts, steps=3, batch=8)
    assert r.steps_run == 3 and r.ended == "done"
    seen = []
    r = heal(student, tiny_bert, texts, steps=10**6, minutes=0.02, batch=8, progress=seen.append)
    assert r.steps_run < 10**6 and not r.stopped and r.ended == "time cap"  # (how many steps fit depends on the load)
    assert seen and all(0 <= d["seconds_left"] <= d["cap_left"] for d in seen)  # the cap comes first here
    assert [d["cap_left"] for d in seen] == sorted((d["cap_left"] for d in seen), reverse=True)  # counting down
    assert r.history[-1]["step"] == r.steps_run  # and the last state was still measured on the dev split
    r = heal(student, tiny_bert, texts, steps=10, minutes=0)
    assert r.steps_run == 0 and r.dev_after == r.dev_before and r.best_step == 0


def test_the_heal_step_keeps_its_texts_digest_and_refuses_another_text(tiny_bert, texts):
    """The table's heal step (heal.heal_step): the recipe of a healed model names the sha256 of the text given; the
    same recipe with other text is refused in one line before any healing."""
    import hashlib
    healed = C.compress(tiny_bert, C.Recipe(heal_steps=2), texts=texts)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    assert healed.recipe.heal_corpus == digest
    with pytest.raises(C.CompressError, match="healed on a text that was not given"):
        C.compress(tiny_bert, healed.recipe, texts=texts[:-1])


def test_split_dev_is_fixed_and_disjoint(texts):
    train, dev = split_dev(texts)
    assert len(dev) == 64 and len(train) + len(dev) == len(texts) and not set(train) & set(dev)
    assert split_dev(texts) == (train, dev)


def test_a_short_runs_dev_set_is_sized_to_its_training():
    """~11 dev checks a run: a 2-step run of 32 texts checks 64 dev texts, not 1,000; from 125 steps, the full set."""
    texts = [f"text {i}" for i in range(50_000)]
    assert [len(split_dev(texts, seen)[1]) for seen in (64, 32 * 10, 32 * 124, 32 * 125, 32 * 4000, None)] == \
        [64, 80, 992, 1000, 1000, 1000]
    short, full = split_dev(texts, 64)[1], split_dev(texts)[1]
    assert short[0] != full[0] and not set(short) & set(split_dev(texts, 64)[0])  # still spread, still disjoint


def _norm(s):
    return s.strip().lower()


def test_heal_corpus_is_large_and_disjoint_from_the_eval_set():
    lines = [s for s in (ASSETS / "heal" / "sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    heal_set = {_norm(s) for s in lines}
    assert len(heal_set) >= 2000
    sentences, _, queries = eval_set()
    assert not heal_set & {_norm(s) for s in sentences + queries}


def test_tinygpt_heals_on_its_training_split_only(tiny_gpt):
    from compress.models import tinygpt as tg
    train, held_out = tg.split_corpus(tg.load_corpus())
    windows = heal_texts(tiny_gpt)
    assert len(windows) > 1000 and all(w in train for w in windows[-3:])
    assert sum(map(len, windows)) <= len(train) and held_out[:200] not in "".join(windows)


def test_the_hidden_state_weight_is_a_recipe_field_that_reaches_the_loss(tiny_bert, tiny_gpt, texts, monkeypatch):
    """heal_hidden (--heal-hidden): the weight of the kept blocks' hidden-state term is the recipe's, so a row measured
    at another weight is one printed command; a decoder or a static table, which never use it, refuse another."""
    from compress.techniques import heal as H
    seen, real = [], H.heal
    monkeypatch.setattr(H, "heal", lambda *a, **k: seen.append(k["hidden_weight"]) or real(*a, **k))
    outs = [C.compress(tiny_bert, C.Recipe(heads=3, heal_steps=3, heal_lr=3e-3, heal_hidden=w), texts=texts)
            for w in (0, 10)]
    assert seen == [0, 10] and [o.recipe.heal_hidden for o in outs] == [0, 10]
    zero, ten = (next(h["loss"] for h in o.applied["heal"]["history"] if h["loss"] is not None) for o in outs)
    assert ten > zero + 0.01  # the same batches from the same start: at 10 the loss holds the hidden-state term
    assert "hidden-state weight 0" in outs[0].recipe.describe() and "hidden" not in C.Recipe(heal_steps=3).describe()
    assert "leave it at 3" in C.refusal(tiny_gpt, C.Recipe(heal_steps=2, heal_hidden=0))
    with pytest.raises(C.CompressError, match="hidden-state weight"):
        C.Recipe(static=True, heal_steps=2, heal_hidden=1)
    assert C.refusal(tiny_gpt, C.Recipe(heal_hidden=0)) is None  # no healing: nothing to refuse

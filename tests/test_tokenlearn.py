"""The static end's Tokenlearn fit (compress/techniques/tokenlearn.py): the teacher's sentence embeddings labeled once,
the table fitted to them by cosine; what Stop, the time cap and the cache do."""
import threading

import torch
import torch.nn.functional as F

import compress as C
from compress.measure import evaluate
from compress.techniques import heal, tokenlearn

TEXTS = [f"Sentence {i} says the {w} is {a} today." for i, (w, a) in enumerate(
    (w, a) for w in ("river", "garden", "market", "kitchen", "bridge", "library", "harbour", "meadow")
    for a in ("quiet", "crowded", "flooded", "closed", "bright", "cold"))]


def _static(bundle):
    return C.compress(bundle, C.Recipe(static=True))


def test_each_target_is_the_teachers_embedding_of_that_text_alone(tiny_bert):
    texts = TEXTS[:20] + ["A much longer text than the others, so that the batches have to pad it to its length."]
    ids_l, y = tokenlearn.targets(tiny_bert, texts)
    for i in (0, 7, 20):  # labeled in batches sorted by length; each in its own place
        want = evaluate.embed(tiny_bert, [texts[i]])[0]
        torch.testing.assert_close(F.normalize(y[i], dim=0), want, rtol=1e-4, atol=1e-5)
        assert ids_l[i].tolist() == tiny_bert.tokenizer(texts[i])["input_ids"]
    assert tokenlearn.targets(tiny_bert, texts)[1] is y  # labeled once: the second call reads the cache


def test_the_fit_raises_dev_fidelity_and_keeps_the_best_state(tiny_bert):
    student = _static(tiny_bert).model
    before = student.embeddings.word_embeddings.weight.detach().clone()
    h = heal.heal(student, tiny_bert, TEXTS, steps=40, lr=1e-2)
    assert h.metric == "fidelity" and h.steps_run == 40 and h.ended == "done"
    assert h.dev_after > h.dev_before + 0.02 and h.best_step > 0
    assert [r["step"] for r in h.history] == [0, 10, 20, 30, 40]
    assert h.dev_after == max(r["dev"] for r in h.history)
    _, dev = heal.split_dev(TEXTS, 40 * tokenlearn.BATCH)
    dev_b, ref = heal.dev_batches(tiny_bert, dev)
    assert heal.dev_metric(student, tiny_bert, dev_b, ref) == h.dev_after  # the best state is the one loaded
    assert not torch.equal(student.embeddings.word_embeddings.weight, before)


def test_a_fit_whose_first_step_would_not_help_keeps_the_distilled_table(tiny_bert):
    student = _static(tiny_bert).model
    before = student.embeddings.word_embeddings.weight.detach().clone()
    h = heal.heal(student, tiny_bert, TEXTS, steps=10, lr=1e3)  # a step far too big
    assert h.best_step == 0 and h.dev_after == h.dev_before
    assert torch.equal(student.embeddings.word_embeddings.weight, before)


def test_a_stop_before_the_fit_labels_nothing_and_changes_nothing(tiny_bert):
    student, stop = _static(tiny_bert).model, threading.Event()
    stop.set()
    before = student.embeddings.word_embeddings.weight.detach().clone()
    labeled = {k for k in tiny_bert.cache if isinstance(k, tuple) and k[0] == "tokenlearn_targets"}
    h = heal.heal(student, tiny_bert, TEXTS[:30], steps=5, lr=1e-2, stop=stop)
    assert h.stopped and h.ended == "Stop" and h.steps_run == 0
    assert torch.equal(student.embeddings.word_embeddings.weight, before)
    assert {k for k in tiny_bert.cache if isinstance(k, tuple) and k[0] == "tokenlearn_targets"} == labeled


def test_a_short_run_labels_only_what_it_reads(tiny_bert, monkeypatch):
    monkeypatch.setattr(tokenlearn, "BATCH", 4)
    seen = []
    real = tokenlearn.targets
    monkeypatch.setattr(tokenlearn, "targets", lambda t, texts, *a: seen.append(len(texts)) or real(t, texts))
    heal.heal(_static(tiny_bert).model, tiny_bert, TEXTS, steps=3, lr=1e-2)
    assert seen == [12]  # 3 steps of 4 texts, not the 40-odd of the training split


def test_progress_reports_every_step_with_the_dev_score(tiny_bert):
    reports = []
    heal.heal(_static(tiny_bert).model, tiny_bert, TEXTS[1:], steps=12, lr=1e-2, progress=reports.append)
    labeling = [r for r in reports if "labeled" in r]  # labeling first (these texts are not in the cache yet)
    assert labeling and labeling[0] == {"labeled": 0, "texts": len(TEXTS) - 1 - len(heal.split_dev(TEXTS[1:], 12 *
                                                                                 tokenlearn.BATCH)[1])}
    reports = reports[len(labeling):]
    assert [r["step"] for r in reports] == list(range(1, 13))
    assert all(r["steps"] == 12 and isinstance(r["loss"], float) and 0 < r["dev"] <= 1 for r in reports)


def _projector(b: torch.Tensor) -> torch.Tensor:  # (r, C) rows spanning a subspace -> its orthogonal projector (C, C)
    q = torch.linalg.qr(b.double().T).Q
    return q @ q.T


def test_a_low_rank_table_restarts_in_the_targets_principal_directions(tiny_bert):
    student = C.compress(tiny_bert, C.Recipe(static=True, emb_rank=0.25)).model
    t = student.embeddings.word_embeddings
    before = t.up(t.emb.weight).detach().double()
    _, y = tokenlearn.targets(tiny_bert, TEXTS)
    tokenlearn.pca_start(student, y)
    top = torch.linalg.svd(y.double(), full_matrices=False)[2][:t.rank]
    p = _projector(top)
    torch.testing.assert_close(_projector(t.up.weight.T), p)  # the map up spans the targets' top r directions
    torch.testing.assert_close(t.up(t.emb.weight).double(), before @ p, rtol=1e-4, atol=1e-5)  # the table, projected
    own = torch.linalg.svd(before, full_matrices=False)[2][:t.rank]  # (not full: U would be 30,522^2, 7.5 GB)
    assert not torch.allclose(_projector(top), _projector(own), atol=1e-3)


def test_the_fit_starts_a_low_rank_table_from_the_pca_and_a_full_one_as_it_was(tiny_bert):
    low = C.compress(tiny_bert, C.Recipe(static=True, emb_rank=0.25)).model
    h = heal.heal(low, tiny_bert, TEXTS, steps=3, lr=1e3)  # steps far too big: the start is the state kept
    assert h.best_step == 0
    t = low.embeddings.word_embeddings
    train, _ = heal.split_dev(TEXTS, 3 * tokenlearn.BATCH)
    _, y = tokenlearn.targets(tiny_bert, train[:3 * tokenlearn.BATCH])
    torch.testing.assert_close(_projector(t.up.weight.T), _projector(torch.linalg.svd(y.double(), full_matrices=False)[2][:t.rank]))
    full = _static(tiny_bert).model
    before = full.embeddings.word_embeddings.weight.detach().clone()
    tokenlearn.pca_start(full, y)
    assert torch.equal(full.embeddings.word_embeddings.weight, before)


def test_targets_that_are_not_finite_or_too_few_leave_the_low_rank_table_as_it_is(tiny_bert):
    low = C.compress(tiny_bert, C.Recipe(static=True, emb_rank=0.25)).model
    t = low.embeddings.word_embeddings
    before = [t.emb.weight.detach().clone(), t.up.weight.detach().clone()]
    _, y = tokenlearn.targets(tiny_bert, TEXTS)
    bad = y.clone()
    bad[3, 0] = float("nan")
    for targets in (bad, y[:t.rank - 1]):
        tokenlearn.pca_start(low, targets)  # no error: the fit that follows says what went wrong, if anything
        assert torch.equal(t.emb.weight, before[0]) and torch.equal(t.up.weight, before[1])


def test_the_time_cap_ends_labeling_with_whole_random_blocks_and_nothing_cached(tiny_bert, monkeypatch):
    """Labeling may take a share of the time cap: at `until` it returns the blocks labeled so far (a seeded random
    share of the text, not its shortest texts) uncached; a cap that comes before one whole block fits nothing."""
    import types
    clock = iter(range(10**6))
    monkeypatch.setattr(tokenlearn, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(tokenlearn, "LABEL", 4)
    monkeypatch.setattr(tokenlearn, "BLOCK", 8)
    texts = TEXTS[2:]
    ids_l, y = tokenlearn.targets(tiny_bert, texts, until=5)  # 5 batches of 4 labeled: 2 whole blocks of 8
    assert len(ids_l) == len(y) == 16
    assert not [k for k in tiny_bert.cache if isinstance(k, tuple) and k[0] == "tokenlearn_targets"
                and tiny_bert.cache[k][1] is y]  # a partial labeling is not cached
    first = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[:16].tolist()
    assert {tuple(x.tolist()) for x in ids_l} == {tuple(tiny_bert.tokenizer(texts[i])["input_ids"]) for i in first}
    for ids, row in zip(ids_l[:3], y[:3]):
        text = tiny_bert.tokenizer.decode(ids[1:-1])
        want = evaluate.embed(tiny_bert, [text])[0]
        torch.testing.assert_close(F.normalize(row, dim=0), want, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(tokenlearn, "time", __import__("time"))
    student = _static(tiny_bert).model
    before = student.embeddings.word_embeddings.weight.detach().clone()
    h = heal.heal(student, tiny_bert, TEXTS[3:], steps=5, lr=1e-2, minutes=1e-9)
    assert h.ended == "time cap" and h.steps_run == 0
    assert torch.equal(student.embeddings.word_embeddings.weight, before)

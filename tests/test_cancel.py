"""Cancel of every job kind while it runs: the library's checkpoints (compress/serve/cancel.py) end it at the next one. Each
test pauses the job just after one of its checkpoints (a hook: as if at work there), cancels it from this thread as a
Cancel button would, lets it go on, and counts the checkpoints it calls after the Cancel: one (the one that ends it). Timeouts are guards against a
hang, never what is asserted."""
import dataclasses
import threading
import traceback
import uuid

import pytest

import compress as C
from compress.serve import cancel, jobs
from compress.models import bundled as models
from compress.techniques.spectrum import compute_spectra


def _count(fn, kind="apply") -> int:
    """Checkpoints of a whole run of fn as a job (not cancelled)."""
    q = jobs.Queue(1)
    job = q.submit(kind, fn)
    assert q.wait(job, 300) and job.state == "done", job.error
    return job.checks


def _cancel_at(fn, at: int, kind="apply", where=None, q=None):
    """Run fn as a job, pause it just after its at-th checkpoint (counting only those inside a function named `where`,
    if given), cancel it, let it go on: (the job, the checkpoints it called after the Cancel)."""
    q, paused, go, n = q or jobs.Queue(1), threading.Event(), threading.Event(), [0]

    def hook(job):
        if where is None or any(f.name == where for f in traceback.extract_stack()):
            n[0] += 1
            if n[0] == at:
                paused.set()
                go.wait(60)  # until this thread pressed Cancel (a guard: never reached in a passing run)
    cancel.HOOK = hook
    try:
        job = q.submit(kind, fn, owner="tab", label=kind)
        assert paused.wait(300), f"{kind} never reached checkpoint {at}"
        before = job.checks
        q.cancel(job)
        go.set()
        assert q.wait(job, 300)
    finally:
        cancel.HOOK = None
    free = q.submit("apply", lambda j: "next")  # the cancelled job gave its slot back
    assert q.wait(free, 60) and free.result == "next" and not q.busy()
    return job, job.checks - before


def _assert_cancelled(job, after):
    assert job.state == "cancelled" and job.result is None and after == 1, (job.state, job.error, after)


@pytest.fixture(autouse=True)
def _no_hook():
    yield
    cancel.HOOK = None


def test_a_checkpoint_outside_a_job_does_nothing_and_inside_a_cancelled_one_raises():
    cancel.checkpoint()  # the CLI, a test: no job, no effect
    q, ran = jobs.Queue(1), []

    def fn(job):
        job.cancel.set()
        ran.append(1)
        cancel.checkpoint()
        ran.append(2)  # never reached
    job = q.submit("apply", fn)
    assert q.wait(job, 30) and job.state == "cancelled" and ran == [1]


@pytest.mark.parametrize("kind", ["spectra", "sizes", "sample", "apply", "heal", "export", "learn", "learn_att",
                                  "learn_article", "sensitivity", "learn_var", "seqlen"])
def test_cancel_of_a_running_job_ends_it_at_its_next_checkpoint(kind, tiny_bert, tiny_gpt, one_thread):
    from compress.bench import seqlen
    from compress.learn import article, attention, figures, variants
    from compress.techniques import pq
    spec = C.spectra(tiny_bert)  # (a job of its own on the page, before)

    def fresh():  # Learn keeps its results in the bundle, by the content hash, and its clusterings by the table's
        pq._FITS.clear()
        return dataclasses.replace(tiny_bert, cache={}, content_hash=str(uuid.uuid4()))
    fn, units = {
        "spectra": (lambda j: compute_spectra(tiny_bert.model, tiny_bert.adapter), len(
            tiny_bert.adapter.factorizable(tiny_bert.model))),  # one per layer's SVD at least
        "sizes": (lambda j: C.numbers(tiny_bert), 3),
        "sample": (lambda j: C.complete(tiny_gpt, "def f(x):", max_new_tokens=40), 40),  # one per token at least
        "apply": (lambda j: C.report(tiny_bert, C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.5))), 7),
        "heal": (lambda j: C.compress(tiny_bert, C.Recipe(heal_steps=30)), 30),  # one per step at least
        "export": (lambda j: C.zip_bytes(C.compress(tiny_bert, C.Recipe(quant="int8"))), 6),  # steps, zip entries
        "learn": (lambda j: figures.prepare(fresh()), 8),
        "learn_att": (lambda j: attention.layer_attention(fresh(), "the cat sat on the mat", 1), 2),
        "learn_article": (lambda j: article.measure(fresh()), 8),
        "sensitivity": (lambda j: C.layer_sensitivity(fresh(), spec), len(
            tiny_bert.adapter.factorizable(tiny_bert.model))),  # one per layer cut at least
        "learn_var": (lambda j: variants.variants(fresh(), "the cat sat", 1, 0, dict.fromkeys(variants.SETTINGS, 2)), 2),
        "seqlen": (lambda j: seqlen.of_recipe(tiny_gpt, C.Recipe(attention="local", window=8), 256, log=print), 2),
    }[kind]
    full = _count(fn, kind)
    assert full >= units  # no second of work without a checkpoint: every unit of it passes one
    job, after = _cancel_at(fn, full // 2, kind)  # halfway: it had about full / 2 checkpoints to go
    _assert_cancelled(job, after)


def test_cancel_of_a_loading_upload(tmp_path, one_thread):
    from builders import build_family
    build_family("bert", tmp_path)
    from compress.models import uploads
    uploads.clear_cache()  # the same tiny BERT (same seed, same bytes) loaded by another test of this process is
    load = lambda j: models.load_model(str(tmp_path))  # noqa: E731  (a cache hit that reads no weights at all)
    job, after = _cancel_at(load, 1, "load")  # before its weights are read; the next one, after them, ends it
    _assert_cancelled(job, after)
    assert q_loads(load) == "BertModel"  # not cached half-done: a load that is not cancelled still works


def q_loads(load):
    q = jobs.Queue(1)
    job = q.submit("load", load)
    assert q.wait(job, 120) and job.state == "done", job.error
    return type(job.result.model).__name__


def test_a_stop_of_healing_keeps_its_best_state_and_a_cancel_drops_it(tiny_bert, one_thread):
    q, recipe = jobs.Queue(1), C.Recipe(heal_steps=5000)

    def fn(job):
        def progress(p):
            if p["step"] == 3:
                job.stop.set()  # the page's "Stop (keeps the best state so far)"
        return C.compress(tiny_bert, recipe, progress=progress, stop=job.stop)
    job = q.submit("heal", fn)
    assert q.wait(job, 120) and job.state == "done"
    heal = job.result.applied["heal"]
    assert heal["stopped"] and heal["steps_run"] == 3

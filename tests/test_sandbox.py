"""The uncuttable calls of a job (the ONNX export and ONNX Runtime's quantization) run in a forked child
(compress/serve/sandbox.py): a Cancel kills it at the next poll, so do its time limit and its memory bound, a failure
is one line, and outside a job the call runs in this process. Timeouts are guards, never what is asserted."""
import os
import threading
import time

import pytest

import compress as C
from compress.serve import cancel, jobs, sandbox
from compress.techniques import ortrun


def _on_queue(fn):
    q = jobs.Queue(1)
    job = q.submit("apply", fn, owner="tab")
    assert q.wait(job, 300)
    return job


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_an_onnxruntime_apply_exports_in_a_child_on_the_queue_and_here_outside_it(tiny_bert, monkeypatch):
    forks, real = [], os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real())
    recipe = C.Recipe(quant="int8", runtime="onnxruntime")
    job = _on_queue(lambda j: C.compress(tiny_bert, recipe))
    assert job.state == "done" and job.result.applied["runtime_applied"] == "onnxruntime", job.result.applied
    assert forks == [1]
    here = C.compress(tiny_bert, recipe)  # the CLI / a script: no job, no child
    assert here.applied["runtime_applied"] == "onnxruntime" and forks == [1]
    assert here.model.file_bytes == job.result.model.file_bytes  # the same graph either way


def test_cancel_kills_the_export_s_child_at_the_next_poll(tiny_bert, monkeypatch):
    pids, real, started = [], os.fork, threading.Event()

    def fork():
        pid = real()
        if pid:
            pids.append(pid)
            started.set()
        return pid
    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(ortrun, "export", lambda *a: time.sleep(120))  # (in the child) as if exporting a huge graph
    q = jobs.Queue(1)
    job = q.submit("apply", lambda j: C.compress(tiny_bert, C.Recipe(runtime="onnxruntime")), owner="tab")
    assert started.wait(120)
    assert _alive(pids[0])
    before = job.checks
    q.cancel(job)
    assert q.wait(job, 60) and job.state == "cancelled"
    assert job.checks - before == 1 and not _alive(pids[0])  # killed and reaped, not left to sleep
    cancel.HOOK = None


def test_a_failure_in_the_child_is_one_line_and_eager_runs(tiny_bert, monkeypatch):
    def boom(*a):
        raise ValueError("no export for this\nsecond line with /a/server/path")
    monkeypatch.setattr(ortrun, "export", boom)
    job = _on_queue(lambda j: C.compress(tiny_bert, C.Recipe(runtime="onnxruntime")))
    assert job.state == "done" and job.result.applied["runtime_applied"] == "eager"
    assert job.result.applied["runtime_reason"] == "onnxruntime failed: ValueError: no export for this"


def test_the_child_s_memory_and_time_are_bounded(monkeypatch):
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "200")
    job = _on_queue(lambda j: sandbox.call(lambda: bytearray(2_000_000_000), what="a greedy call"))
    assert job.state == "failed" and job.error.startswith("MemoryError") and "\n" not in job.error
    job = _on_queue(lambda j: sandbox.call(time.sleep, 60, what="a slow call", limit_s=0.5))
    assert job.state == "failed" and job.error == "a slow call ran past its limit of 0.5 s and was stopped"
    with pytest.raises(MemoryError):  # outside a job: the call itself, here
        sandbox.call(lambda: (_ for _ in ()).throw(MemoryError()))

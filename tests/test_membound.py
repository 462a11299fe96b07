"""The memory bound per job kind (compress/serve/membound.py): estimated from the parameters before anything is allocated,
refused in one line over COMPRESS_MEM_BUDGET_MB."""
import pytest

import compress as C
from compress.serve import membound
from compress.table import pipeline
from compress.techniques.spectrum import compute_spectra


def _params(b) -> int:
    return sum(p.numel() for p in b.model.parameters())


def test_a_heal_over_the_budget_is_refused_before_the_copy_and_an_apply_under_it_runs(tiny_bert, monkeypatch):
    apply_mb = membound.estimate_mb("apply", _params(tiny_bert))
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", str(apply_mb * 1.01))  # an apply fits, a healing (7 copies) not
    real = pipeline.copy.deepcopy
    monkeypatch.setattr(pipeline.copy, "deepcopy", lambda *a: pytest.fail("allocated before the check"))
    with pytest.raises(C.CompressError, match=r"heal of tiny-bert needs about \d+ MB .* x 7\) and a job here may "
                                              r"use \d+ MB \(COMPRESS_MEM_BUDGET_MB\)") as e:
        C.compress(tiny_bert, C.Recipe(heal_steps=10))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(pipeline.copy, "deepcopy", real)
    assert C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.5)).recipe.rank == 0.5


@pytest.mark.parametrize("kind", ["sizes", "sample", "spectra"])
def test_every_other_kind_is_refused_over_its_budget(kind, tiny_bert, tiny_gpt, monkeypatch):
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "0.1")  # the tiny GPT: 0.3 MB to sample
    run = {"sizes": lambda: C.numbers(tiny_bert), "sample": lambda: C.complete(tiny_gpt, "x"),
           "spectra": lambda: compute_spectra(tiny_bert.model, tiny_bert.adapter)}[kind]
    with pytest.raises(C.CompressError, match=f"^{kind} of .* needs about"):
        run()
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "100000")
    run()  # the same work under a budget that fits


@pytest.mark.parametrize("value", ["lots", "0", "-5", "nan"])
def test_a_bad_budget_setting_is_one_line(value, monkeypatch):
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", value)
    with pytest.raises(C.CompressError, match="COMPRESS_MEM_BUDGET_MB must be a number above 0"):
        membound.budget_mb()


def test_the_default_budget_is_half_the_machine(monkeypatch):
    monkeypatch.delenv("COMPRESS_MEM_BUDGET_MB", raising=False)
    total_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    assert membound.budget_mb() == pytest.approx(total_kb * 1024 / 2 / 1e6, rel=0.01)


def test_the_jobs_alive_together_are_bounded_by_the_server_total(monkeypatch):
    """A healing between its steps still holds its copies: an Apply that would take the jobs' sum over
    COMPRESS_MEM_SERVER_MB is refused in one line, and runs once the healing ended (what it held is free)."""
    import threading
    from compress.serve import jobs
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "1000")
    monkeypatch.setenv("COMPRESS_MEM_SERVER_MB", "1500")
    q, go, held = jobs.Queue(1), threading.Event(), threading.Event()

    def heal(job):  # 25M params x 4 B x 7 = 700 MB, held while it waits between its steps
        membound.check("heal", None, "a", params=25_000_000)
        held.set()
        while not go.is_set():
            q.yield_(job)
            go.wait(0.05)
    h = q.submit("heal", heal, "tab-1")
    assert held.wait(30)
    assert membound.held_mb() == pytest.approx(700)
    apply = q.submit("apply", lambda job: membound.check("apply", None, "b", params=60_000_000), "tab-2")  # 960 MB
    assert q.wait(apply, 30) and apply.state == "failed"
    assert "the jobs alive on this server hold about 700 MB of the 1,500 MB" in apply.error and "\n" not in apply.error
    small = q.submit("apply", lambda job: membound.check("apply", None, "c", params=40_000_000), "tab-2")  # 640 MB
    assert q.wait(small, 30) and small.state == "done"
    go.set()
    assert q.wait(h, 30) and h.state == "done" and membound.held_mb() == 0
    again = q.submit("apply", lambda job: membound.check("apply", None, "b", params=60_000_000), "tab-2")
    assert q.wait(again, 30) and again.state == "done"

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

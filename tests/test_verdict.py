"""The quality verdict (compress/measure/verdict.py): kept / some loss / large loss by the stated thresholds."""
import pytest

from compress.measure.verdict import THRESHOLDS, verdict


@pytest.mark.parametrize("quality, word", [
    ({"fidelity": 0.978, "fidelity_docs": 0.97}, "kept"), ({"fidelity": 0.895}, "some loss"),
    ({"fidelity": 0.70}, "large loss"), ({"fidelity": 0.95}, "kept"), ({"fidelity": 0.85}, "some loss"),
    ({"neighbour_agreement": 0.39}, "large loss"), ({"top1_agreement": 0.99, "next_token_kl": 0.01}, "kept"),
    ({"top1_agreement": 0.9}, "some loss")])
def test_verdict_by_the_stated_thresholds(quality, word):
    v = verdict(quality)
    assert v["verdict"] == word and str(v["value"]) in str(quality.values())
    t = next(t for t in THRESHOLDS if t.metric == v["metric"])
    assert f">= {t.kept}" in v["rule"] and f">= {t.some}" in v["rule"]
    assert bool(v["hint"]) == (word != "kept")


def test_no_judged_metric_no_verdict():
    assert verdict({}) is None and verdict({"fidelity": float("nan")}) is None and verdict({"bpc": 1.7}) is None


def test_a_healed_result_is_told_to_heal_longer_not_to_heal():
    q = {"fidelity": 0.77}
    assert verdict(q)["hint"].startswith("Heal it") and "a sweep on the Trade-offs page" in verdict(q)["hint"]
    assert verdict(q, healed=True)["hint"].startswith("It was healed: heal longer")
    assert "more steps" in verdict({"fidelity": 0.9}, healed=True)["hint"]

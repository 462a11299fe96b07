"""The metrics table (compress/measure/metrics.py) is what every consumer reads: the sweep's objectives and their
directions, the frontier, the plots' and the HTML report's labels, the page's rates, the stored row, the card."""
import pytest

import compress as C
from compress.measure import metrics as M
from compress.outputs import html, plots
from compress.sweep import frontier, space as S


def test_every_metric_has_a_direction_label_kind_tasks_and_workloads():
    assert M.METRICS and C.METRICS is M.METRICS
    for name, m in M.METRICS.items():
        assert m.name == name and m.direction in ("maximize", "minimize") and m.kind in M.KINDS
        assert m.title and m.about and set(m.tasks) <= set(M.TASKS) and set(m.workloads) <= set(M.WORKLOADS)
        assert (m.value is None) or (m.measure is None)  # read from what is measured, or measured on its own


def test_sweep_metrics_are_a_view_of_the_table(tiny_bert, tiny_gpt):
    assert S.METRICS == {n: (m.direction, m.about) for n, m in M.METRICS.items()}
    assert S.TIMED == {n for n, m in M.METRICS.items() if m.kind == "speed"}
    for b in (tiny_bert, tiny_gpt):
        for w in ("ids", "sentences"):
            assert S.metrics_for(b, w) == [n for n, m in M.METRICS.items() if m.available(b, w)]
    objectives = tuple(M.METRICS)
    assert S.Space("x", {}, objectives).directions == [M.METRICS[o].direction for o in objectives]
    rows = [{"trial": 0, "state": "complete", "feasible": True, "size_mb": 2.0, "fidelity": 0.9},
            {"trial": 1, "state": "complete", "feasible": True, "size_mb": 1.0, "fidelity": 0.8}]
    assert frontier.frontier(rows, ["fidelity", "size_mb"]) == [0, 1]  # directions from the table


def test_the_rate_is_chosen_by_the_table(tiny_bert, tiny_gpt):
    assert M.rate_for(tiny_bert).name == "sentences_per_s" and M.rate_for(tiny_gpt).name == "tokens_per_s"
    assert set(M.RATES) == {"sentences_per_s", "tokens_per_s"}
    assert "tokens_per_s" in S.metrics_for(tiny_gpt, "sentences") and "tokens_per_s" not in S.metrics_for(tiny_gpt)


def test_labels_of_plots_and_the_html_report_come_from_the_table():
    for name, m in M.METRICS.items():
        assert plots.label(name) == m.title == M.label(name)
    assert plots.label("unhealed_fidelity") == C.metric_label("unhealed_fidelity")  # outside the table: its words
    fig = plots.tradeoff([{"trial": 0, "state": "complete", "feasible": True, "size_mb": 1.0, "next_token_kl": 0.1,
                           "recipe": C.Recipe().to_json()}], "size_mb", "next_token_kl")
    assert fig.layout.xaxis.title.text == M.METRICS["size_mb"].title
    assert fig.layout.yaxis.title.text == f"{M.METRICS['next_token_kl'].title} (lower is better)"


def test_values_read_a_measured_side():
    lat = {"p10": 1.0, "p50": 2.0, "p90": 3.0, "tokens_per_s": 50.0}
    c = {"size_bytes": 1_000_000, "params": 10, "quality": {"next_token_kl": 0.1}, "latency_ms": lat}
    o = {"size_bytes": 4_000_000, "params": 40, "quality": {}, "latency_ms": {**lat, "p50": 5.0}}
    v = M.values(c, o)
    assert v == {"next_token_kl": 0.1, "size_mb": 1.0, "size_bytes": 1_000_000, "params": 10, "x_smaller": 4.0,
                 "latency_ms": 2.0, "speedup": 2.5, "tokens_per_s": 50.0}
    assert "latency_ms" not in M.values({**c, "latency_ms": None}, o)  # not timed: no timed metric
    assert frontier.timed_values({"original": o["latency_ms"], "compressed": lat})["speedup"] == 2.5

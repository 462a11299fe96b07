"""The metrics table (compress/measure/metrics.py) is what every consumer reads: the sweep's objectives and their
directions, the frontier, the plots' and the HTML report's labels, the page's rates, the stored row, the card."""
import json

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


# ---------------------------------------------------------------- peak_mem_mb: one entry of the table

W = {"kind": "ids", "batch": 8, "seq": 128}


@pytest.mark.slow
def test_peak_memory_is_positive_and_larger_for_a_bigger_model():
    peak = M.METRICS["peak_mem_mb"]
    gpt, mini = C.load_model("tinygpt"), C.load_model("minilm")
    small, big = peak.measure(gpt, W), peak.measure(mini, W)
    assert 0 < small < big  # MiniLM (22.7M params, 12 layers) against TinyGPT (1.9M)
    assert peak.measure(mini, {**W, "batch": 32}) > big  # a bigger batch needs more


def test_peak_memory_is_only_where_a_fresh_process_can_load_the_model(tiny_bert):
    assert "peak_mem_mb" in S.metrics_for(C.load_model("tinygpt")) and "peak_mem_mb" not in S.metrics_for(tiny_bert)
    assert M.METRICS["peak_mem_mb"] in M.own("all") and M.METRICS["peak_mem_mb"] not in M.own()  # costly: asked for


@pytest.mark.slow
def test_peak_memory_is_in_the_cli_json_the_card_the_report_and_a_sweep(capsys):
    from compress.__main__ import main
    from compress.outputs.export import card
    from compress.sweep import run
    assert main(["apply", "--model", "tinygpt", "--quant", "int8", "--batch", "2", "--seq", "16", "--metrics",
                 "peak_mem_mb"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert out["original"]["peak_mem_mb"] > 0 and out["compressed"]["peak_mem_mb"] > 0
    gpt = C.load_model("tinygpt")
    comp = C.compress(gpt, C.Recipe(quant="int8"))
    assert card(comp, out)["peak_mem_mb"] == {k: out[k]["peak_mem_mb"] for k in ("original", "compressed")}
    res = html.result(out, comp.recipe)
    page = html.comparison({"name": "tinygpt", "info": gpt.info, "content_hash": gpt.content_hash,
                            "quality": C.quality_words(gpt)}, res)
    assert M.METRICS["peak_mem_mb"].title in page
    assert "peak_mem_mb" in C.row(out["original"], out["compressed"], {k: out[k]["latency_ms"] for k in res["lat"]})
    space = S.check(S.Space("tinygpt", {"layers": (2,)}, ("peak_mem_mb",), constraints=(("size_mb", "<=", 99),)), gpt)
    assert space.own == ("peak_mem_mb",) and space.directions == ["minimize"]
    trial = run.measure_trial(gpt, space.recipe({"layers": 2}), space)
    assert trial["peak_mem_mb"] > 0


def _table_codes(b, ids, mask):  # (a fresh process's function: test_metrics imported there by name)
    return int(b.model.get_submodule(b.adapter.word_embeddings).codes.sum())


def test_the_fresh_process_replays_the_recipe_without_clustering_its_table(monkeypatch, tmp_path):
    """A call's memory depends on shapes: the child builds the recipe as a saved model's replay does (a 2-bit table's
    clustering is half a minute on MiniLM), its codes left at zero."""
    from compress.table import child
    from compress.techniques import pq
    monkeypatch.setattr(pq, "_fit", lambda w, d: pytest.fail("the fresh process clustered the table"))
    mini, out = C.load_model("minilm"), tmp_path / "out.json"
    child.main({"model": "minilm", "content_hash": mini.content_hash, "recipe": C.Recipe(emb_pq=4).to_json(),
                "workload": W, "fn": "test_metrics:_table_codes", "threads": 1}, str(out))
    assert json.loads(out.read_text()) == {"value": 0}


def test_the_cli_measures_a_costly_metric_only_when_asked_and_names_a_wrong_one(capsys):
    from compress.__main__ import main
    assert main(["apply", "--model", "tinygpt", "--metrics", "peak_mem", "--batch", "2", "--seq", "16"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'peak_mem'" in err and "peak_mem_mb" in err and "Traceback" not in err
    assert main(["apply", "--model", "tinygpt", "--quant", "int8", "--batch", "2", "--seq", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "peak_mem_mb" not in out["compressed"] and out["compressed"]["size_bytes"] < out["original"]["size_bytes"]


def test_the_quality_words_are_the_tables_for_the_metrics_a_model_has(tiny_bert, tiny_gpt, monkeypatch):
    """Page, card and report say what quality means from the table alone: each quality metric the model has, in the
    table's words, then the model's own note; nothing of a metric the model does not have."""
    for b in (tiny_bert, tiny_gpt):
        words = C.quality_words(b)
        for m in M.METRICS.values():
            if m.kind == "quality":
                assert (f"{m.name}: {m.about}" in words) == m.available(b)
    monkeypatch.setitem(tiny_bert.info, "metric_note", "only indicative")
    assert C.quality_words(tiny_bert).endswith("(only indicative)")
    tinygpt = C.load_model("tinygpt")  # a bundled model's note: its card's held-out number
    assert "bits_per_char: held-out" in C.quality_words(tinygpt) and "the card's held-out" in C.quality_words(tinygpt)

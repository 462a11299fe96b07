"""The one-file report (compress/outputs/html.py) on a result dict in the page's shape: no raw dict or list dumps, a
title and both axis titles on every chart, no server path, an unreliable timing marked as such."""
import json
import re

import compress as C
from compress.outputs import html as htmlreport

LAT = {"p10": 9.0, "p50": 10.0, "p90": 12.0}


def _res(busy: float = 0.01) -> dict:
    nums = {"size_bytes": 8_000_000, "params": 2_000_000, "size_breakdown": {}, "quality": {"fidelity": 0.9}}
    return {"recipe": C.Recipe(quant="int8"), "workload": {"kind": "ids", "batch": 8, "seq": 32}, "layers": [],
            "nums": {"original": {**nums, "size_bytes": 30_000_000, "quality": {"fidelity": 1.0}}, "compressed": nums},
            "lat": {"original": {**LAT, "p50": 30.0, "others_busy": busy}, "compressed": {**LAT, "others_busy": busy}},
            "applied": {"runtime_applied": "eager"}}


def _card() -> dict:
    return {"name": "tiny", "content_hash": "ab" * 32, "quality": "fidelity: a cosine",
            "info": {"architecture": "Bert", "source": "/work/main/.venv/lib/python3.11/site-packages/gt_x/model"}}


def _figures(html: str) -> list[dict]:
    """Each chart's layout, as plotly writes it: Plotly.newPlot("figN", data, layout, config)."""
    return [json.loads(m) for m in re.findall(r'Plotly\.newPlot\(\s*"fig\d+",\s*\[.*?\],\s*(\{.*?\}),\s*\{"displaylogo"',
                                              html, re.S)]


def test_every_chart_has_a_title_and_axis_titles_and_no_path_is_shown():
    samples = {"Original": ["a", "b"], "Compressed": ["a", "c"], "_note": "greedy continuations of the same prompt"}
    html = htmlreport.comparison(_card(), _res(), samples=samples, machine="a CPU")
    layouts = _figures(html)
    assert len(layouts) == 3
    for lay in layouts:
        assert lay["title"]["text"] and lay["xaxis"]["title"]["text"] and lay["yaxis"]["title"]["text"]
        assert lay["margin"]["t"] >= 60  # the title has room: it was clipped at 40
    assert "<p>greedy continuations of the same prompt</p>" in html and "<li>g</li>" not in html
    assert "/work/" not in html and "site-packages" not in html and "…/model" in html
    assert "unreliable" not in html


def test_an_unreliable_timing_is_marked_in_the_sentence_and_the_table():
    html = htmlreport.comparison(_card(), _res(busy=0.5), machine="a CPU")
    assert "3.00x faster (unreliable: other programs used 50% of the CPUs" in html
    assert "(unreliable: CPUs busy)" in html


def test_the_peers_speed_up_names_the_run_of_the_original_it_is_against():
    """The peer is timed against its own interleaved run of the original, not the original row above it: a newcomer
    read 24.5 ms beside the original's 192.3 ms and '44.71x faster'."""
    peer = _res()
    peer["lat"] = {"original": {**LAT, "p50": 40.0, "others_busy": 0.01}, "compressed": {**LAT, "others_busy": 0.01}}
    html = htmlreport.comparison(_card(), _res(), peer=peer, machine="a CPU")
    assert "4.00x (against its own run of the original: 40.0 ms)" in html  # 40 / 10, not the original row's 30 / 10
    assert "3.00x</td>" in html  # the compressed row: against the original row itself, said plainly


def test_public_keeps_words_and_drops_paths():
    assert htmlreport.public("loaded /tmp/compress-upload-x/my model.zip, ok") == "loaded …/my model.zip, ok"
    assert htmlreport.public("ratio 1/2 and http://x/y stay") == "ratio 1/2 and http://x/y stay"


def test_history_rows_carry_the_timing_flag_and_no_change_is_no_speed_up():
    o, c = _res()["nums"]["original"], _res()["nums"]["compressed"]
    assert C.row(o, c, _res()["lat"], C.Recipe(quant="int8"))["timing"] == "reliable"
    busy = C.row(o, c, _res(busy=0.4)["lat"], C.Recipe(quant="int8"))
    assert busy["timing"] == "unreliable: other programs used 40% of the CPUs" and busy["x faster"] == 3.0
    same = C.row(o, o, _res()["lat"], C.Recipe())  # Apply with nothing chosen: not "1.26x faster than itself"
    assert same["timing"] == "no change" and same["x faster"] is None


def test_a_chart_in_words_says_its_title_axes_and_each_traces_values():
    from compress.outputs.plots import in_words
    import plotly.graph_objects as go
    fig = go.Figure([go.Scatter(x=[1, 2, 3], y=[0.5, 0.9, 0.7], name="fidelity"),
                     go.Heatmap(z=[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], name="attention")])
    fig.update_layout(title="Quality <b>by rank</b>", xaxis_title="rank", yaxis_title="fidelity")
    assert in_words(fig) == ("Quality by rank (fidelity against rank); fidelity: 3 points, values from 0.5 to 0.9; "
                             "attention: a 3 x 2 map, values from 0.1 to 0.6.")
    bars = go.Figure(go.Bar(x=[1, 2], y=["int8", "none"], name="size"))  # categories are counted, not ranged
    assert in_words(bars) == "A chart; size: 2 points, values 2 categories."
    same = go.Figure(go.Scatter(x=[7.6, 7.6, 3.8, 7.6], y=[0, 0, 0.06, 0], name="frontier"))  # three equal trials
    assert in_words(same) == "A chart; frontier: 4 points at 2 places, values from 0 to 0.06."


def test_every_chart_of_the_report_has_its_words():
    html = htmlreport.comparison(_card(), _res(), machine="a CPU")
    figures = _figures(html)
    words = re.findall(r"<p class='alt'>The chart in words: ([^<]+)</p>", html)
    assert figures and len(words) == len(figures)
    for layout, w in zip(figures, words):
        assert w.startswith(layout["title"]["text"].split("<")[0].strip()[:20])

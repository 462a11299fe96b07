"""One Measurement (compress/measure/measurement.py): made by one call, its to_dict() the JSON `apply` always printed
(the same keys, the same sizes and quality numbers as the report main wrote into the legacy zip's card), its row()
the stored row of old."""
import json
import shutil
import zipfile

import pytest

import compress as C
from compress.table import pipeline
from conftest import ROOT

LEGACY = ROOT / "tests" / "fixtures" / "legacy"
REPORT_KEYS = {"recipe", "workload", "original", "compressed", "layers", "runtime_applied", "kept_blocks"}
SIDE_KEYS = {"size_bytes", "params", "size_breakdown", "latency_ms", "quality"}
SMALL = {"batch": 2, "seq": 32, "runs": 7}  # a small workload: what is checked is the shape and the calls, not speed
LAT_KEYS = {"p10", "p50", "p90", "runs", "total_ms", "others_busy", "dropped"}


@pytest.fixture(scope="module")
def gpt_int8():
    gpt = C.load_model("tinygpt")
    recipe = C.Recipe(layers=3, rank=0.5, quant="int8")  # the legacy zip's recipe (tests/fixtures/make_legacy.py)
    return gpt, C.compress(gpt, recipe)


@pytest.fixture(scope="module")
def measured(gpt_int8):
    """One call: the compressed model, its original, the peer and the model before healing (here: without int8)."""
    gpt, comp = gpt_int8
    seen = []
    m = C.measure_compression(gpt, comp, peer=C.peer_model(gpt), unhealed=C.compress(gpt, C.Recipe(layers=3)),
                              progress=seen.append, **SMALL)
    m.seen = seen
    return m


def test_to_dict_is_the_report_main_wrote(measured):
    """The legacy card holds main's report (before issue 26) of this recipe: same keys, sizes, params, quality."""
    card = json.loads(zipfile.ZipFile(LEGACY / "tinygpt_int8.zip").read("card.json"))
    d = measured.to_dict()
    assert set(d) == REPORT_KEYS | {"unhealed"} and set(d["compressed"]) == set(d["original"]) == SIDE_KEYS
    assert d["compressed"]["size_bytes"] == card["size_bytes"] and d["compressed"]["params"] == card["params"]
    assert d["original"]["size_bytes"] == card["original_size_bytes"]
    assert d["compressed"]["quality"].keys() == card["quality"].keys()
    for k, v in card["quality"].items():
        assert d["compressed"]["quality"][k] == pytest.approx(v, abs=2e-3), k
    assert set(d["workload"]) == set(card["workload"]) and d["workload"]["kind"] == "ids"
    for side in ("original", "compressed"):
        assert set(d[side]["latency_ms"]) == set(card["latency_ms"][side]) == LAT_KEYS
    assert d["recipe"] == C.Recipe(layers=3, rank=0.5, quant="int8").to_dict() and d["kept_blocks"] == [0, 1, 2]
    assert d["original"]["quality"] == {"bits_per_char": d["original"]["quality"]["bits_per_char"],
                                        "next_token_kl": 0.0, "top1_agreement": 1.0}


def test_report_is_a_thin_alias_with_the_same_numbers(gpt_int8, measured):
    rep = pipeline.report(*gpt_int8, **SMALL)
    d = measured.to_dict()
    assert set(rep) == REPORT_KEYS and rep["layers"] == d["layers"]  # report: no peer, no unhealed
    for side in ("original", "compressed"):
        assert rep[side].keys() == d[side].keys() and rep[side]["latency_ms"].keys() == d[side]["latency_ms"].keys()
        for k in ("size_bytes", "params", "size_breakdown", "quality"):  # deterministic: equal
            assert rep[side][k] == d[side][k]
    assert {k: v for k, v in rep["workload"].items() if k != "runs"} == \
        {k: v for k, v in d["workload"].items() if k != "runs"}


def test_row_is_the_stored_row_of_old(measured, tmp_path, monkeypatch):
    shutil.copy(LEGACY / "results.sqlite", tmp_path / "results.sqlite")
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path))
    monkeypatch.delenv("COMPRESS_STORAGE", raising=False)
    old = C.applies(session="legacy-session")[0]
    row = measured.row()
    assert set(row) == set(old) - {"when", "session", "model", "recipe_json"}
    assert row == C.row(*(measured.to_dict()[k] for k in ("original", "compressed")), measured.lat, measured.recipe)
    for k in ("size MB", "x smaller", "params M", "bits_per_char", "next_token_kl", "top1_agreement"):
        assert row[k] == pytest.approx(old[k], abs=2e-3), k


def test_peer_and_unhealed_are_measured_in_the_same_call(gpt_int8, measured):
    gpt, comp = gpt_int8
    d, seen = measured.to_dict(), measured.seen
    assert set(d["unhealed"]) == SIDE_KEYS - {"latency_ms"}
    assert d["unhealed"]["quality"] == C.quality(C.compress(gpt, C.Recipe(layers=3)), gpt)
    p = measured.peer.to_dict()
    assert p["recipe"] == C.PEER.to_dict() and p["runtime_applied"] in ("onnxruntime", "eager")
    assert p["original"]["size_bytes"] == d["original"]["size_bytes"]  # one original, timed with each
    assert p["original"]["latency_ms"] != d["original"]["latency_ms"]  # ... interleaved with its own run
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] == 1.0 and any(f <= 0.5 for f in seen)
    assert measured.machine == C.machine_line(d["workload"])
    assert set(measured.versions) == {"torch", "transformers", "python"}


def test_measure_takes_an_original_and_a_compressed_copy_of_it(gpt_int8, tiny_bert):
    gpt, comp = gpt_int8
    import dataclasses
    for a, b in ((gpt, dataclasses.replace(comp, recipe=None)), (comp, gpt), (tiny_bert, comp), (gpt, gpt)):
        with pytest.raises(C.CompressError, match="not a compressed copy"):  # unrelated or swapped: nothing measured
            C.measure_compression(a, b, timed=False)
    for bad in ("nope", ["fidelity", "nope"], 5):
        with pytest.raises(C.CompressError, match="unknown metric|metrics are"):
            C.measure_compression(gpt, comp, timed=False, own=bad)

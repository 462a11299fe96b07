"""Presets (compress/table/presets.py): measured recipes from BENCHMARKS.md, each buildable, its numbers found in
BENCHMARKS.md (copied, not invented), refused on a model by the technique table's own words."""
import pytest

import compress as C
from compress.bench import techniques as bench
from compress.table import presets
from conftest import ROOT
from ui import state


@pytest.mark.parametrize("p", presets.PRESETS, ids=lambda p: p.name)
def test_each_preset_builds_and_its_numbers_are_benchmarks(p):
    r = p.build()
    assert r != C.Recipe() and r.describe() != "original"
    text = (ROOT / "BENCHMARKS.md").read_text() + (ROOT / "README.md").read_text()
    size = p.gives.split(" MB")[0]
    assert size in text, f"{p.name}: its size {size} MB is in no benchmark"
    assert p.measured_on and p.source
    assert 0 <= p.minutes <= state.CAP[1]  # the healing cap it sets is one the app's control can hold


def test_bench_sets_are_the_presets():
    assert bench.SETS["tenx"] == [presets.BY_NAME["about 10x"].build()]
    assert bench.SETS["twentyx"] == [presets.BY_NAME["about 20x"].build()]


def test_a_preset_a_model_cannot_take_says_why_in_the_tables_words(tiny_gpt, tiny_bert):
    assert presets.reason("about 4x", tiny_gpt) is None and presets.reason("static", tiny_bert) is None
    assert presets.reason("static", tiny_gpt) == C.refusal(tiny_gpt, presets.BY_NAME["static"].build())
    assert "has 2 blocks" in presets.reason("about 10x", tiny_gpt)  # 3 of its 2 layers
    with pytest.raises(C.CompressError, match="unknown preset"):
        presets.reason("about 1000x", tiny_gpt)


@pytest.mark.parametrize("model, words", [("tinygpt", "bits_per_char: held-out bits"), ("minilm", "fidelity: mean cosine")])
def test_a_bench_table_says_what_its_quality_columns_are(model, words):
    head = bench.markdown(model, [{"recipe": "x", "skipped": "why"}], 8, 128).split("\n\n")[1]
    assert f"Quality: {words}" in head and "Not applicable" not in head


def test_a_model_without_a_pooler_or_long_positions_takes_a_preset_without_those_fields(tiny_bert, minilm):
    """drop_pooler and positions change no output: a model with nothing to drop (tiny-bert: no pooler, 128 positions)
    is given the preset without them, not refused for them; MiniLM (a pooler, 512 positions) keeps both."""
    ten = presets.BY_NAME["about 10x"]
    assert ten.recipe["drop_pooler"] and ten.recipe["positions"] == 256
    assert C.refusal(tiny_bert, ten.build()) and "pooler" in C.refusal(tiny_bert, C.Recipe(drop_pooler=True))
    mine = ten.build(tiny_bert)
    assert not mine.drop_pooler and mine.positions == 0 and mine.emb_pq == 4 and mine.heal_steps == 4000
    assert "has 2 blocks" in presets.reason("about 10x", tiny_bert)  # what it cannot take is still said
    assert all(p.build(minilm) == p.build() and presets.reason(p.name, minilm) is None for p in presets.PRESETS)

"""bench --peers (compress/bench/peers.py): the project's recipes beside ONNX Runtime and Model2Vec, one process."""
import numpy as np
import pytest

import compress as C
from compress.bench import peers


@pytest.fixture
def a_model2vec(tiny_bert, tmp_path):
    """A Model2Vec static model of another width (48), saved as model2vec saves one: what distill would give."""
    from model2vec import StaticModel
    tok = tiny_bert.tokenizer.backend_tokenizer
    vectors = np.random.default_rng(0).normal(size=(tiny_bert.vocab_size, 48)).astype(np.float16)
    StaticModel(vectors, tok, normalize=True).save_pretrained(str(tmp_path / "m2v"))
    return tmp_path / "m2v"


def test_every_row_is_measured_in_one_run_with_width_free_quality(tiny_bert, a_model2vec, monkeypatch):
    monkeypatch.setattr(peers, "model2vec_dir", lambda b, log=print: a_model2vec)
    rows, skipped = peers.run(tiny_bert, [C.Recipe(quant="int8")], runs=7, log=lambda m: None)
    by = {r["model"]: r for r in rows}
    assert not skipped and list(by)[0].startswith("fp32") and len(rows) == 5
    assert by["ONNX Runtime fp32 (the original)"]["fidelity"] > 0.999  # the same model, another runtime
    m2v = by["Model2Vec distill (256 dims, fp16)"]
    assert m2v["fidelity"] == "n/a" and m2v["size MB"] == round(
        sum(f.stat().st_size for f in a_model2vec.glob("*.safetensors")) / 1e6, 2)
    assert abs(m2v["similarity_spearman"]) < 0.3  # random vectors: unrelated to the original
    for r in rows:
        assert r["sentences/s"] > 0 and r["p50 ms (ids)"] > 0
        assert r["x sentences/s"] == round(r["sentences/s"] / rows[0]["sentences/s"], 1)
        for k in ("neighbour_agreement", "neighbour_agreement_docs"):
            assert 0 <= r[k] <= 1
    assert rows[0]["neighbour_agreement"] == 1 and rows[0]["similarity_spearman"] == 1
    assert by["project: int8"]["neighbour_agreement"] > m2v["neighbour_agreement"]
    md = peers.markdown(tiny_bert, rows, ["Model2Vec: a reason"], 8, 128)
    assert "| model | size MB |" in md and "Skipped: Model2Vec: a reason." in md


def test_model2vec_that_cannot_be_made_is_skipped_with_the_reason(tiny_bert, tmp_path, monkeypatch):
    assert "model folder" in peers.model2vec_dir(tiny_bert)  # the tiny model was not loaded from a folder
    monkeypatch.setattr(peers, "PEERS_DIR", tmp_path)
    monkeypatch.setattr(peers.sys, "executable", str(tmp_path / "no-python"))
    b = tiny_bert.__class__(**{**tiny_bert.__dict__, "info": {**tiny_bert.info, "path": str(tmp_path)}})
    why = peers.model2vec_dir(b, log=lambda m: None)
    assert isinstance(why, str) and "could not run here" in why


def test_a_decoder_has_no_peers_here(tiny_gpt):
    with pytest.raises(C.CompressError, match="encoder"):
        peers.run(tiny_gpt, [], log=lambda m: None)

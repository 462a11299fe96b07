"""The Learn page's efficient-attention variants (compress/learn/variants.py): the matrix drawn for each variant is
the one the compressed model applies at that layer, and its error is the compressed layer's, on tiny random models."""
import pytest
import torch

import compress as C
from compress.learn import attention as A
from compress.learn import variants as V
from compress.measure.evaluate import batches
from compress.models.adapters import forward

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "Let the dough rest in the fridge for at least an hour."
SETTINGS = {"window": 3, "stride": 2, "attn_rank": 4, "features": 8, "buckets": 2}


def _o_input(b, model, layer):
    """What the layer's output projection reads for TEXT: (T, H * hd), the heads' mixed values side by side."""
    ids, mask = batches(b, [TEXT], 1)[0]
    ids, mask = ids[:, :A.MAX_TOKENS], mask[:, :A.MAX_TOKENS]
    o = b.adapter.block_list(model)[layer].get_submodule(b.adapter.o)
    seen = {}
    h = o.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0][0].float()))
    try:
        with torch.no_grad():
            forward(model, b.adapter, ids, mask)
    finally:
        h.remove()
    return seen["x"], o


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt", "tiny_qwen2"])
def test_each_variant_draws_the_matrix_its_compressed_model_applies(fixture, request):
    b = request.getfixturevalue(fixture)
    layer, head = 0, 1  # the first block: its input is the same with and without the variant
    got = V.variants(b, TEXT, layer, head, SETTINGS)
    want, o = _o_input(b, b.model, layer)
    T = want.shape[0]
    v = A.layer_attention(b, TEXT, layer)["qkv"][2]                            # (H, T, hd)
    hd = v.shape[-1]
    assert got["original"]["error"] == 0 and got["original"]["mix"].shape == (T, T)
    drawn = [n for n in got if "mix" in got[n] and n != "original"]
    assert ("lowrank" in drawn) == (not b.adapter.causal) and len(drawn) >= 5
    for name in drawn:
        comp = C.compress(b, got[name]["recipe"]).model
        y, _ = _o_input(b, comp, layer)                                       # (T, H * hd)
        mix = torch.from_numpy(got[name]["mix"])                               # (T, T)
        torch.testing.assert_close(mix @ v[head], y[:, head * hd:(head + 1) * hd], atol=2e-4, rtol=1e-3)
        with torch.no_grad():
            err = float((o(y) - o(want)).norm() / o(want).norm())
        assert got[name]["error"] == pytest.approx(err, rel=1e-3, abs=1e-5), name
        assert torch.allclose(mix.sum(1), torch.ones(T), atol=1e-4), name  # rows still sum to 1
        if b.adapter.causal:
            assert not mix.triu(1).any(), name                                 # no query reads a later key
    assert got["local"]["density"] < got["linear"]["density"] and got["linear"]["error"] > 0  # a band vs dense
    assert V.variants(b, TEXT, layer, head, SETTINGS) is got                  # kept: no second computation


def test_a_window_as_long_as_the_sentence_is_the_original_and_a_refusal_is_one_line(tiny_gpt, tiny_bert):
    got = V.variants(tiny_bert, TEXT, 0, 0, {**SETTINGS, "window": 128, "stride": 1})
    assert got["local"]["error"] < 1e-5 and got["strided"]["error"] < 1e-5
    assert "causal" in V.variants(tiny_gpt, TEXT, 0, 0, SETTINGS)["lowrank"]["refused"]
    rows = V.table(got)
    assert [r["attention"] for r in rows] == ["original", *C.FIELDS["attention"].choices[1:len(rows)]]
    assert all(r["applies"] == "yes" and r["layer output error"] is not None for r in rows)
    refused = {r["attention"]: r for r in V.table(V.variants(tiny_gpt, TEXT, 0, 0, SETTINGS))}["lowrank"]
    assert refused["applies"].startswith("no: ") and "causal" in refused["applies"]  # its empty cells say why
    assert refused["layer output error"] is None and refused["share non-zero"] is None
    with pytest.raises(C.CompressError, match="head must be"):
        V.variants(tiny_bert, TEXT, 0, 99, SETTINGS)
    assert V.recipe("local+strided", SETTINGS) == C.Recipe(attention="local+strided", window=3, stride=2)

"""Every allowed pair of techniques through compress(): finite outputs and the param count the shapes predict."""
import itertools

import pytest
import torch

import compress as C
from compress.adapters import forward

pytestmark = pytest.mark.usefixtures("one_thread")

C_, H, HD, L, FF = 64, 4, 16, 2, 128  # tiny_bert: hidden, heads, head dim, layers, FFN width
STEPS = {"heads": dict(heads=2), "ffn": dict(ffn=0.5), "fnet": dict(fnet=True), "emb": dict(emb_rank=0.25),
         "rank": dict(rank_mode="ratio", rank=0.25), "int8": dict(quant="int8"), "freeze": dict(runtime="freeze")}
PAIRS = [p for p in itertools.combinations(STEPS, 2) if set(p) != {"heads", "fnet"}]


def expected_params(base: int, r: C.Recipe, vocab: int) -> int:
    """Params from the shapes alone: pruning, FNet and low rank each remove a known number."""
    heads = r.heads or H
    ff = round(r.ffn * FF)
    attn = [] if r.fnet else [(heads * HD, C_)] * 3 + [(C_, heads * HD)]  # (out, in) of q, k, v, o
    linears = attn + [(ff, C_), (C_, ff)]
    removed = (H - heads) * (3 * (HD * C_ + HD) + HD * C_) + (FF - ff) * (2 * C_ + 1)
    removed += 4 * (C_ * C_ + C_) if r.fnet else 0
    if r.rank_mode == "ratio":
        for m, n in linears:
            k = max(1, round(r.rank * min(m, n)))
            removed += m * n - k * (m + n) if k * (m + n) < m * n else 0
    emb_r = round(r.emb_rank * C_)
    return base - L * removed - (vocab * C_ - emb_r * (vocab + C_) if r.emb_rank < 1 else 0)


@pytest.mark.parametrize("pair", PAIRS, ids="+".join)
def test_every_allowed_pair(pair, tiny_bert):
    r = C.Recipe(**{k: v for step in pair for k, v in STEPS[step].items()})
    comp = C.compress(tiny_bert, r)
    ids = torch.randint(5, 1000, (3, 9), generator=torch.Generator().manual_seed(0))
    out = forward(comp.model, comp.adapter, ids, torch.ones_like(ids))
    assert out.shape == (3, 9, C_) and torch.isfinite(out).all()
    assert C.numbers(comp)["params"] == expected_params(C.count_params(tiny_bert.model), r, tiny_bert.vocab_size)
    assert comp.applied["runtime_applied"] == r.runtime


def test_fnet_with_heads_and_fnet_on_a_decoder_are_refused(tiny_bert):
    with pytest.raises(C.CompressError, match="FNet or head pruning"):
        C.Recipe(fnet=True, heads=2)
    gpt = C.load_model("tinygpt")
    with pytest.raises(C.CompressError, match="causal"):
        C.compress(gpt, C.Recipe(fnet=True))


def test_more_heads_than_the_model_has_is_a_clean_error(tiny_bert):
    with pytest.raises(C.CompressError, match="head"):
        C.compress(tiny_bert, C.Recipe(heads=5))

"""One attention layer over the static table (static_attn, compress/techniques/static.py's Mix): it starts as the
plain table, attends over real tokens only, is fitted with the rows, quantizes, saves and reloads, and does nothing
without the static table (its control is greyed out)."""
import math

import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.techniques import static

TEXTS = ["The dough rests overnight in the fridge.", "A short one.", "Rain is expected over the hills by evening."]


def test_the_layer_starts_as_the_plain_table_and_adds_four_projections(tiny_bert):
    plain, mixed = (C.compress(tiny_bert, C.Recipe(static=True, static_attn=a)) for a in (False, True))
    torch.testing.assert_close(evaluate.embed(mixed, TEXTS), evaluate.embed(plain, TEXTS))
    w = tiny_bert.info["hidden"]
    assert C.numbers(mixed)["params"] - C.numbers(plain)["params"] == 4 * (w * w + w)
    assert mixed.model.mix.heads == tiny_bert.info["heads"]
    assert "one attention layer" in C.Recipe(static=True, static_attn=True).describe()


def test_each_head_attends_over_the_real_tokens_by_the_formula():
    torch.manual_seed(0)
    mix = static.Mix(8, 2)
    for p in mix.parameters():
        torch.nn.init.normal_(p)
    h, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = mix(h, mask)
    x, heads = h[1, :2], []  # the second text's real tokens, each head on its 4 dimensions
    for i in range(2):
        q, k, v = (m(x)[:, 4 * i:4 * i + 4] for m in (mix.q, mix.k, mix.v))
        heads.append(torch.softmax(q @ k.T / math.sqrt(4), -1) @ v)
    torch.testing.assert_close(out[1, :2], x + mix.o(torch.cat(heads, -1)), rtol=1e-4, atol=1e-5)
    h2 = h.clone()
    h2[1, 2:] = 100.0  # padding changes nothing at the real positions
    torch.testing.assert_close(mix(h2, mask)[1, :2], out[1, :2])
    assert torch.isfinite(mix(h, torch.zeros_like(mask))).all()  # a text with no real token: no NaN


def test_the_fit_trains_the_layer_with_the_rows_and_it_saves_and_reloads(tiny_bert, tmp_path):
    comp = C.compress(tiny_bert, C.Recipe(static=True, static_attn=True, heal_steps=30, heal_lr=1e-2))
    h = comp.applied["heal"]
    assert h["dev_after"] > h["dev_before"] + 0.01
    assert comp.model.mix.o.weight.abs().sum() > 0  # the layer learned something (it started at zero)
    again = C.load_compressed(C.save_compressed(comp, tmp_path / "m"), [tiny_bert])
    assert again.recipe == comp.recipe
    torch.testing.assert_close(evaluate.embed(again, TEXTS), evaluate.embed(comp, TEXTS))


def test_int8_quantizes_the_layer_too(tiny_bert):
    fp, q8 = (C.compress(tiny_bert, C.Recipe(static=True, static_attn=True, quant=q)) for q in ("none", "int8"))
    assert C.numbers(q8)["size_bytes"] < C.numbers(fp)["size_bytes"]
    assert evaluate.embed(q8, TEXTS).shape == evaluate.embed(fp, TEXTS).shape


def test_without_the_static_table_the_field_is_off_and_changes_nothing(tiny_bert):
    assert C.field_reason("static_attn", tiny_bert, {"static": False}) == "only with the static table"
    torch.testing.assert_close(evaluate.embed(C.compress(tiny_bert, C.Recipe(static_attn=True)), TEXTS),
                               evaluate.embed(tiny_bert, TEXTS))

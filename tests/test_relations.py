"""Attention-relation distillation (compress/techniques/relations.py, MiniLM v2): the relations are what their
formula says, zero between a model and itself, comparable across head counts, healed down, and refused where a
recipe has no attention on every token."""
import copy
import math

import numpy as np
import pytest
import torch

import compress as C
from compress.measure.evaluate import batches
from compress.models.adapters import forward
from compress.techniques import relations as R
from compress.techniques.heal import _loss, heal, heal_texts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts(tiny_bert):
    return heal_texts(tiny_bert)[:200]


def _captured(bundle, model, ids, mask):
    with R.capture(model, bundle.adapter) as out, torch.no_grad():
        forward(model, bundle.adapter, ids, mask)
    return out


def test_relations_are_the_softmax_of_scaled_dot_products_over_real_keys():
    torch.manual_seed(0)
    x, real = torch.randn(2, 5, 12), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
    lr = R.log_relations(x, 3, real)
    assert lr.shape == (2, 3, 5, 5)
    head = x[1, :, 4:8]  # the second relation head of the second text, by the formula
    want = torch.softmax(head[:3] @ head[:3].T / math.sqrt(4), -1)
    torch.testing.assert_close(lr[1, 1, :3, :3].exp(), want)
    assert lr[1].exp()[..., 3:].max() < 1e-6  # padded keys get no weight
    assert R.heads(384, 320) == 8 and R.heads(384, 384) == 12 and R.heads(64, 48) == 8


def test_the_loss_is_zero_against_itself_and_positive_for_a_pruned_student(tiny_bert, texts):
    ids, mask = batches(tiny_bert, texts[:8], 8)[0]
    t = _captured(tiny_bert, tiny_bert.model, ids, mask)
    same = _captured(tiny_bert, copy.deepcopy(tiny_bert.model), ids, mask)
    assert float(R.loss(same, t, mask)) == pytest.approx(0.0, abs=1e-6)
    pruned = C.compress(tiny_bert, C.Recipe(heads=3)).model  # 4 heads of 16 -> 3: widths 64 and 48
    s = _captured(tiny_bert, pruned, ids, mask)
    assert s["q"].shape[-1] == 48 and t["q"].shape[-1] == 64
    assert float(R.loss(s, t, mask)) > 1e-4


def test_healing_with_relations_adds_the_term_and_lowers_it(tiny_bert, texts):
    model = copy.deepcopy(tiny_bert.model)
    with torch.no_grad():  # a random model attends almost uniformly: sharper projections, relations worth learning
        for layer in model.encoder.layer:
            for p in (layer.attention.self.query.weight, layer.attention.self.key.weight):
                p.mul_(8)
    teacher = C.ModelBundle(model, "sharp", tiny_bert.adapter, tiny_bert.tokenizer, "sharp", dict(tiny_bert.info))
    ids, mask = batches(teacher, texts[:16], 16)[0]

    def healed(weight):  # the relation loss of a factorized student before and after 20 steps healed with weight
        student = C.compress(teacher, C.Recipe(rank_mode="ratio", rank=0.25)).model
        rel = lambda: float(R.loss(_captured(teacher, student, ids, mask), _captured(teacher, model, ids, mask), mask))
        before = rel()
        heal(student, teacher, texts, steps=20, lr=3e-3, batch=16, eval_every=5, hidden_weight=0.0,
             relation_weight=weight)
        return before, rel(), student
    before, without, student = healed(0.0)
    with torch.no_grad():
        plain, with_rel = (float(_loss(student, teacher, ids, mask, 0.0, 0.0, w)) for w in (0.0, 1.0))
    assert with_rel == pytest.approx(plain + without, rel=1e-4)  # the term is added, weighted
    assert healed(1.0)[1] < 0.8 * min(before, without)  # healing with the term learns the relations; without: not


def test_the_table_heals_with_relations_and_refuses_them_without_attention(tiny_bert, tiny_gpt):
    r = C.Recipe(heads=3, heal_steps=2, heal_relations=True)
    out = C.compress(tiny_bert, r)
    assert out.recipe.heal_relations is True and "with attention relations" in r.describe()
    for bad in (dict(fnet=True), dict(pool=2), dict(static=True)):  # the recipe alone is refused
        with pytest.raises(C.CompressError, match="attention relations need"):
            C.Recipe(heal_steps=2, heal_relations=True, **bad)
    assert "encoders" in C.refusal(tiny_gpt, C.Recipe(heal_steps=2, heal_relations=True))
    assert C.refusal(tiny_bert, C.Recipe(fnet=True, heal_relations=True)) is None  # no healing: nothing to refuse


def test_the_learn_figures_maps_are_the_relations_healing_copies(tiny_bert, tiny_gpt):
    from compress.learn import relmaps
    text = "The dough rests overnight in the fridge."
    d = relmaps.relation_maps(tiny_bert, text)
    enc = tiny_bert.tokenizer(text, return_tensors="pt")
    t = _captured(tiny_bert, tiny_bert.model, enc["input_ids"], enc["attention_mask"])
    for n in "qkv":
        want = R.log_relations(t[n], d["heads"][n], enc["attention_mask"].bool())[0].exp()
        np.testing.assert_allclose(d["maps"][n], want.numpy(), atol=1e-6)
        np.testing.assert_allclose(d["maps"][n].sum(-1), 1, atol=1e-5)
        assert ((0 <= d["entropy"][n]) & (d["entropy"][n] <= math.log2(len(d["tokens"])) + 1e-6)).all()
    with pytest.raises(C.CompressError, match="encoders"):
        relmaps.relation_maps(tiny_gpt, text)


def test_a_fused_projection_is_split_into_query_key_and_value():
    from compress.models.adapters import ADAPTERS
    from encoder_models import perturbed, tiny_encoder
    ad = ADAPTERS["modernbert"]
    model = ad.prepare(perturbed(tiny_encoder("modernbert", hidden=32, vocab=300)[0]))
    ids, mask = torch.randint(5, 300, (2, 9)), torch.ones(2, 9, dtype=torch.long)
    with R.capture(model, ad) as out, torch.no_grad():
        forward(model, ad, ids, mask)
    with torch.no_grad():
        whole = ad.block_list(model)[-1].get_submodule(ad.q)(model.embeddings(ids))  # any input: the split's shape
    assert [out[n].shape[-1] for n in "qkv"] == [32, 32, 32] == [whole.shape[-1] // 3] * 3
    assert float(R.loss(out, out, mask)) == pytest.approx(0.0, abs=1e-6)
    assert not torch.equal(out["q"], out["k"])  # three different projections, not one read three times


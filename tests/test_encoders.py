"""MPNet and ModernBERT's own structure: pruning removes exactly what masking the same heads / neurons silences (MPNet's
shared relative position bias read per block, ModernBERT's fused Wqkv and split GeGLU), a dropped ModernBERT block is
the same as skipping it, padding is found on ModernBERT's local (banded) blocks, hostile configs are refused in one
line, and the download loads back (MPNet's positions after vocabulary pruning: test_vocab)."""
import copy

import pytest
import torch

import compress as C
from compress.models.adapters import ADAPTERS, forward
from compress.models.bundle import ModelBundle, hf_info
from compress.techniques.heads import head_mask, narrow_ffn, prune_heads
from encoder_models import perturbed, tiny_encoder
from builders import build_family
from test_uploads import make_zip, refused, with_config

pytestmark = pytest.mark.usefixtures("one_thread")
FAMS = ["mpnet", "modernbert"]


def _model(fam, heads=4):
    """A 2-block model of the family as the upload path leaves it (ModernBERT's Wi split), v biases zero: a pruned
    head's v bias is folded into o's bias, which masking the head does not do."""
    m = ADAPTERS[fam].prepare(perturbed(tiny_encoder(fam, hidden=8 * heads, heads=heads, vocab=300)[0]))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("attn.v.bias"):
                p.zero_()
    return m


def _ids(t=10):
    return torch.randint(5, 300, (2, t), generator=torch.Generator().manual_seed(1))


def _out(model, fam, ids=None, mask=None):
    with torch.no_grad():
        return forward(model, ADAPTERS[fam], _ids() if ids is None else ids, mask)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_pruning_heads_equals_masking_them(fam, k):
    """Each block keeps other heads (its own scores); MPNet's blocks each read the shared bias's columns of theirs."""
    m, a = _model(fam), ADAPTERS[fam]
    scores = [torch.rand(4, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    kept = [s.topk(k).indices.sort().values for s in scores]
    assert k == 1 or not torch.equal(kept[0], kept[1])  # the blocks keep different heads
    masks = [torch.zeros(4).index_fill(0, ks, 1.0) for ks in kept]
    with torch.no_grad(), head_mask(m, a, masks):
        ref = forward(m, a, _ids())
    prune_heads(m, a, k, scores)
    torch.testing.assert_close(_out(m, fam), ref, rtol=1e-5, atol=1e-5)
    for block, ks in zip(a.block_list(m), kept):
        q = a.qkv(block)[0]
        assert q[0].weight[q[1]].shape[0] == 8 * k  # (a fused Wqkv: each third)
        if fam == "mpnet":
            assert torch.equal(block.attention.attn.bias_heads, ks) and block.attention.attn.num_attention_heads == k


def test_mpnet_keeps_one_position_bias_table():
    m, a = _model("mpnet"), ADAPTERS["mpnet"]
    table = m.encoder.relative_attention_bias.weight.clone()
    c = C.compress(ModelBundle(m, "mpnet", a, None, "h", hf_info(m.config, "test")), C.Recipe(heads=2))
    assert torch.equal(c.model.encoder.relative_attention_bias.weight, table)  # other blocks read other columns


def test_modernbert_narrowing_ffn_equals_masking_the_fused_neurons():
    """The split Wi and Wgate lose the same rows, Wo the same columns: the fused original with those neurons zeroed."""
    fused = perturbed(tiny_encoder("modernbert", hidden=32, vocab=300)[0])
    m, a = ADAPTERS["modernbert"].prepare(copy.deepcopy(fused)), ADAPTERS["modernbert"]
    scores = [torch.rand(64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    keep = [torch.zeros(64).index_fill(0, s.topk(24).indices, 1.0) for s in scores]
    hooks = [blk.mlp.Wo.register_forward_pre_hook(lambda mod, args, w=w: (args[0] * w,))
             for blk, w in zip(fused.layers, keep)]
    ref = _out(fused, "modernbert")
    for h in hooks:
        h.remove()
    assert not torch.allclose(ref, _out(fused, "modernbert"), atol=1e-4)  # the neurons mattered
    narrow_ffn(m, a, 24 / 64, scores)
    assert [b.mlp.Wi.out_features for b in m.layers] == [b.mlp.Wgate.out_features for b in m.layers] == [24, 24]
    torch.testing.assert_close(_out(m, "modernbert"), ref, rtol=1e-5, atol=1e-5)


def test_a_dropped_modernbert_block_is_skipped_and_the_kept_one_keeps_its_kind():
    """Block 0 is global with no attention norm, block 1 local (window 4) with one: keeping either alone equals the
    original with the other skipped."""
    m = _model("modernbert")
    b = ModelBundle(m, "mb", ADAPTERS["modernbert"], None, "h", hf_info(m.config, "test"))
    small = C.compress(b, C.Recipe(layers=1))
    (kept,) = small.applied["kept_blocks"]
    skip = m.layers[1 - kept].register_forward_hook(lambda mod, args, kwargs, out: args[0], with_kwargs=True)
    try:
        ref = _out(m, "modernbert", _ids(12))
    finally:
        skip.remove()
    assert small.model.config.layer_types == [m.config.layer_types[kept]]
    torch.testing.assert_close(_out(small.model, "modernbert", _ids(12)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("recipe", [dict(attention="local", window=3), dict(attention="linear"), dict(fnet=True)])
def test_padding_is_found_on_modernberts_local_blocks(recipe):
    """A short sentence padded next to a long one gives what it gives alone, and the local block's band no longer
    matters (handed the global mask, the same): the real keys are read off the local block's banded mask right (its first and last rows see
    only their neighbours)."""
    m = _model("modernbert")
    b = ModelBundle(m, "mb", ADAPTERS["modernbert"], None, "h", hf_info(m.config, "test"))
    c = C.compress(b, C.Recipe(**recipe))
    ids, mask = _ids(14), torch.ones(2, 14, dtype=torch.long)
    mask[1, 6:] = 0
    both, alone = _out(c.model, "modernbert", ids, mask), _out(c.model, "modernbert", ids[1:, :6])
    torch.testing.assert_close(both[1, :6], alone[0], rtol=1e-4, atol=1e-4)
    from transformers.masking_utils import create_bidirectional_mask
    with torch.no_grad():  # the local block handed the global block's mask
        full = create_bidirectional_mask(config=c.model.config, inputs_embeds=c.model.embeddings(input_ids=ids),
                                         attention_mask=mask)
        same = c.model(input_ids=ids, attention_mask={"full_attention": full, "sliding_attention": full})
    torch.testing.assert_close(same.last_hidden_state, both, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """{family: the files of a valid tiny upload}"""
    out = {}
    for fam in FAMS:
        d = tmp_path_factory.mktemp(fam)
        build_family(fam, d)
        out[fam] = {f.name: f.read_bytes() for f in d.iterdir()}
    return out


@pytest.mark.parametrize("fam", FAMS)
def test_a_valid_upload_loads(fam, good, tmp_path, tmpdirs):
    b = C.load_model(str(make_zip(tmp_path / "ok.zip", good[fam])))
    assert b.info["model_type"] == fam and b.task == "embedding" and b.adapter is ADAPTERS[fam]
    assert b.info["max_positions"] == 128 - (2 if fam == "mpnet" else 0)  # MPNet's positions start after 1


@pytest.mark.parametrize("fam, changes, match", [
    ("mpnet", dict(relative_attention_num_buckets=10**9), "relative_attention_num_buckets = 1,000,000,000 is more"),
    ("modernbert", dict(local_attention=10**9), "local_attention = 1,000,000,000 is more"),
    ("modernbert", dict(global_attn_every_n_layers=10**6), "global_attn_every_n_layers = 1,000,000 is more"),
    *[(f, dict(num_hidden_layers=1000), "num_hidden_layers = 1,000 is more") for f in FAMS],
    *[(f, dict(num_attention_heads=3), "not divisible|not a valid") for f in FAMS],
    *[(f, dict(auto_map={"AutoModel": "evil.Model"}), "its own code") for f in FAMS],
    *[(f, dict(intermediate_size=10**8), "parameters") for f in FAMS],
])
def test_hostile_configs_are_refused_in_one_line(fam, changes, match, good, tmp_path, tmpdirs):
    msg = refused(make_zip(tmp_path / "m.zip", with_config(good[fam], **changes)), match, tmpdirs)
    assert "\n" not in msg and len(msg) < 400


@pytest.mark.parametrize("fam, recipe", [("mpnet", dict(heads=2, ffn=0.5, quant="int8")),
                                         ("modernbert", dict(heads=3, ffn=0.5, quant="int8")),
                                         ("mpnet", dict(layers=1, heads=1, emb_bits=4)),
                                         ("modernbert", dict(layers=1, quant="int4", vocab=0.5))])
def test_the_download_loads_back_to_the_same_outputs(fam, recipe, tiny_mpnet, tiny_modernbert, tmp_path):
    b = {"mpnet": tiny_mpnet, "modernbert": tiny_modernbert}[fam]
    c = C.compress(b, C.Recipe(**recipe))
    back = C.load_compressed(C.save_compressed(c, tmp_path / "c.zip"), originals=[b])
    ids = torch.randint(5, 1000, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(forward(back.model, b.adapter, ids), forward(c.model, b.adapter, ids))


@pytest.mark.parametrize("fam, recipe, why", [("mpnet", dict(attention="local"), "relative position bias inside"),
                                               ("mpnet", dict(pool=2, pool_at=1), "computed once for the whole"),
                                               ("modernbert", dict(pool=2, pool_at=1), "position tables of the whole")])
def test_what_the_family_cannot_do_is_one_line_of_the_table(fam, recipe, why, tiny_mpnet, tiny_modernbert):
    b = {"mpnet": tiny_mpnet, "modernbert": tiny_modernbert}[fam]
    r = C.Recipe(**recipe)
    assert why in C.refusal(b, r) and C.refusal(b, r).startswith(b.name) and C.refusal(None, r) is None
    with pytest.raises(C.CompressError, match=why):
        C.compress(b, r)
    name = next(iter(recipe))
    assert why in C.field_reason(name, b, C.Recipe().to_dict())  # the control is greyed out with the same words


@pytest.mark.parametrize("fam", FAMS)
def test_the_learn_pages_attention_maps_are_the_models_own(fam):
    """Block 1's maps are the eager attention's own probabilities: MPNet's with its relative position bias (after
    pruning, the columns of the heads that block kept), ModernBERT's local block with its window."""
    from compress.learn.attention import layer_attention
    from compress.measure.evaluate import batches
    m = _model(fam)
    if fam == "mpnet":  # block 0 keeps heads 0 and 1, block 1 heads 2 and 3
        prune_heads(m, ADAPTERS[fam], 2, [torch.tensor([4.0, 3, 2, 1]), torch.tensor([1.0, 2, 3, 4])])
    b = ModelBundle(m, f"tiny-{fam}", ADAPTERS[fam], None, f"{fam}-hash", hf_info(m.config, "test"))
    text = "The city council met on Tuesday."
    got = torch.from_numpy(layer_attention(b, text, 1)["maps"])   # (H, T, T)
    eager = copy.deepcopy(m)
    eager.set_attn_implementation("eager")
    ids, mask = batches(b, [text], 1)[0]                             # (random ids without a tokenizer: no padding id)
    with torch.no_grad():
        want = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[1][0]
    assert got.shape == tuple(want.shape) == ((2 if fam == "mpnet" else 4), ids.shape[1], ids.shape[1])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if fam == "modernbert":  # the window really cuts: a token 3 places away gets nothing
        assert ids.shape[1] > 4 and float(got[:, 0, 3:].abs().max()) == 0

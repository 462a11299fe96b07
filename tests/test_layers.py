"""Fewer layers (compress/techniques/layers.py): block influence, which blocks stay, exactness, healing's layer map."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import compress as C
from compress.techniques.heal import _loss, calibration_batches, heal, heal_texts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_block_influence_is_one_minus_cosine_of_each_blocks_input_and_output(tiny_bert):
    batches = calibration_batches(tiny_bert)
    hooks = [len(b._forward_hooks) for b in tiny_bert.model.encoder.layer]
    got = C.block_influence(tiny_bert.model, tiny_bert.adapter, batches)
    assert [len(b._forward_hooks) for b in tiny_bert.model.encoder.layer] == hooks  # its hooks are removed
    total, n = torch.zeros(2), 0
    with torch.no_grad():  # the same from the hidden states the model reports
        for ids, mask in batches:
            hs = tiny_bert.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            real = mask.bool()
            total += torch.stack([(1 - F.cosine_similarity(hs[i][real], hs[i + 1][real], dim=-1)).sum() for i in range(2)])
            n += int(real.sum())
    torch.testing.assert_close(torch.tensor(got), total / n)


def test_choose_layers_keeps_the_most_influential_in_model_order():
    assert C.choose_layers([0.1, 0.5, 0.2, 0.9], 2) == [1, 3]
    assert C.choose_layers([0.137, 0.117, 0.110, 0.122, 0.160, 0.405], 3) == [0, 4, 5]  # MiniLM's, measured
    for bad in (0, 5, 2.5, True):
        with pytest.raises(C.CompressError, match="4 blocks"):
            C.choose_layers([0.1, 0.5, 0.2, 0.9], bad)


def test_tinygpt_with_two_of_four_layers_is_a_two_layer_tinygpt(tiny_gpt):
    from compress.models.tinygpt import GPTConfig, TinyGPT
    torch.manual_seed(0)
    four = TinyGPT(GPTConfig(block_size=32, n_layer=4, n_head=2, n_embd=32, dropout=0.0)).eval()
    two = C.drop_layers(copy.deepcopy(four), tiny_gpt.adapter, [1, 3])
    assert two.config.n_layer == 2 and len(two.blocks) == 2 and two.kept_blocks == [1, 3]
    ref = TinyGPT(dataclasses.replace(four.config, n_layer=2)).eval()
    ref.load_state_dict({k.replace("blocks.1.", "blocks.0.").replace("blocks.3.", "blocks.1."): v
                         for k, v in four.state_dict().items() if not k.startswith(("blocks.0.", "blocks.2."))})
    ids = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(two(ids), ref(ids))


def test_fewer_layers_is_smaller_and_checked_against_the_model(tiny_bert, tiny_gpt):
    c = C.compress(tiny_bert, C.Recipe(layers=1, heads=(2,)))
    per_block = sum(p.numel() for p in tiny_bert.model.encoder.layer[0].parameters())
    assert C.count_params(tiny_bert.model) - C.count_params(c.model) > per_block  # a block, and heads of the other
    assert len(c.applied["kept_blocks"]) == 1
    assert len(tiny_bert.cache["block_influence"]) == 2  # measured once per model, then reused
    assert len(C.compress(tiny_gpt, C.Recipe(layers=1)).model.blocks) == 1  # decoders too
    with pytest.raises(C.CompressError, match="2 blocks"):
        C.compress(tiny_bert, C.Recipe(layers=3))
    with pytest.raises(C.CompressError, match="1 blocks"):  # the per-layer head list counts kept blocks
        C.compress(tiny_bert, C.Recipe(layers=1, heads=(2, 2)))
    for bad in (-1, 1.5, "2"):
        with pytest.raises(C.CompressError, match="layers"):
            C.Recipe(layers=bad)
    assert C.Recipe(layers=1).structural and "1 layers" in C.Recipe(layers=1).describe()


def test_healing_matches_each_kept_block_to_the_teacher_block_it_came_from(tiny_bert):
    ids, mask = calibration_batches(tiny_bert)[0]

    def hidden_term(keep):
        student = C.drop_layers(copy.deepcopy(tiny_bert.model), tiny_bert.adapter, keep)
        with torch.no_grad():
            return float(_loss(student, tiny_bert, ids, mask, 1.0, 0.0) - _loss(student, tiny_bert, ids, mask, 0.0, 0.0))
    assert abs(hidden_term([0])) < 1e-6  # kept block 0 sees the same input as the teacher's block 0: exactly 0
    assert hidden_term([1]) > 1e-4       # kept block 1 sees the embeddings, the teacher's block 1 does not
    student = C.drop_layers(copy.deepcopy(tiny_bert.model), tiny_bert.adapter, [0])
    r = heal(student, tiny_bert, heal_texts(tiny_bert)[:200], steps=20, lr=3e-3, batch=16, eval_every=5)
    assert r.dev_after > r.dev_before

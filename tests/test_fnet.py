"""FNet: Fourier mixing in place of self-attention, on tiny random encoders of each family."""
import copy

import numpy as np
import pytest
import torch
from builders import build_family

from compress.models.adapters import ADAPTERS, conv1d_to_linear, forward
from compress.models.uploads import FAMILIES  # every family an upload may declare (test_families' list)
from compress.techniques.fnet import apply_fnet, attention_params, fourier_mix
from compress.table.recipe import CompressError
from compress.models.tinygpt import GPTConfig, TinyGPT

pytestmark = pytest.mark.usefixtures("one_thread")

ENCODERS = [f for f in FAMILIES if not ADAPTERS[f].causal]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    return {f: build_family(f, tmp_path_factory.mktemp(f)).eval() for f in ENCODERS + ["gpt2"]}


def _padded_batch(model, seed=0):
    """Three sentences of lengths 10, 6 and 3, right-padded to 10 with the model's pad id."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = mask[2, 3:] = 0
    pad = model.config.pad_token_id or 0  # RoBERTa's padding_idx is 1, and its positions skip pad tokens
    return ids * mask + pad * (1 - mask), mask


def test_fourier_mix_is_real_fft2():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    ref = np.fft.fft2(x.numpy(), axes=(-2, -1)).real
    np.testing.assert_allclose(fourier_mix(x).numpy(), ref, atol=1e-10)
    # with padding: each sequence is transformed over its real tokens only (right AND left padding)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    out = fourier_mix(x, valid)
    for b in range(2):
        real = x[b][valid[b]].numpy()
        np.testing.assert_allclose(out[b][valid[b]].numpy(), np.fft.fft2(real).real, atol=1e-10)
        assert (out[b][~valid[b]] == 0).all()  # pad positions get nothing from the mixing
    # all valid: the DFT path agrees with the FFT path (float32, as models run it)
    x32 = x.float()
    torch.testing.assert_close(fourier_mix(x32, torch.ones(2, 6, dtype=torch.bool)), fourier_mix(x32),
                               atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("family", ENCODERS)
def test_fnet_drops_exactly_qkvo(family, family_models):
    model, a = copy.deepcopy(family_models[family]), ADAPTERS[family]
    before = model.state_dict()
    dropped = attention_params(model, a)
    apply_fnet(model, a)
    after = model.state_dict()
    n = len(a.block_list(model))
    expected = {f"{a.blocks}.{i}.{p}.{w}" for i in range(n) for p in dict.fromkeys((a.q, a.k, a.v, a.o))  # (fused)
                for w in ("weight", "bias") if w == "weight" or f"{a.blocks}.{i}.{p}.bias" in before}  # (ModernBERT: none)
    assert set(before) - set(after) == expected and set(after) <= set(before)  # nothing else renamed or lost
    bias = f"{a.blocks}.0.{a.o}.bias" in before
    assert dropped == sum(before[k].numel() for k in expected) == 2 * 4 * (32 * 32 + 32 * bias)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in family_models[family].parameters()) - dropped


@pytest.mark.parametrize("family,impl", [(f, "sdpa") for f in ENCODERS] + [("bert", "eager")])
def test_fnet_output_does_not_depend_on_the_batch(family, impl, family_models):
    model, a = copy.deepcopy(family_models[family]), ADAPTERS[family]
    model.set_attn_implementation(impl)  # sdpa hands the block a bool mask (or None), eager an additive float one
    apply_fnet(model, a)
    ids, mask = _padded_batch(model)
    with torch.no_grad():
        out = forward(model, a, ids, mask)
        assert out.shape == (3, 10, 32) and torch.isfinite(out).all()
        for b, n in ((1, 6), (2, 3)):  # a sentence alone (no padding) == the same sentence in the padded batch
            alone = forward(model, a, ids[b:b + 1, :n], torch.ones(1, n, dtype=torch.long))
            torch.testing.assert_close(out[b, :n], alone[0], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out, forward(family_models[family], a, ids, mask), atol=1e-3)  # it did change


def test_fnet_twice_is_once(family_models):
    a = ADAPTERS["bert"]
    once = apply_fnet(copy.deepcopy(family_models["bert"]), a)
    twice = apply_fnet(apply_fnet(copy.deepcopy(family_models["bert"]), a), a)
    ids, mask = _padded_batch(once)
    with torch.no_grad():
        torch.testing.assert_close(forward(once, a, ids, mask), forward(twice, a, ids, mask))


def test_fnet_rejects_decoders(family_models):
    gpt2 = conv1d_to_linear(copy.deepcopy(family_models["gpt2"]))
    tiny = TinyGPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16))
    for model, family in ((gpt2, "gpt2"), (tiny, "tinygpt")):
        with pytest.raises(CompressError, match="only applies to encoders"):
            apply_fnet(model, ADAPTERS[family])

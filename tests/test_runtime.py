"""Runtimes: TorchScript freeze and torch.compile give eager's outputs, or fall back to eager with a reason."""
import copy

import pytest
import torch
from builders import build_family

import compress.techniques.runtime as R
from compress.models.adapters import ADAPTERS, conv1d_to_linear, forward
from compress.techniques.quantize import apply_quantize
from compress.table.recipe import CompressError
from compress.techniques.runtime import Runtime, apply_runtime
from compress.models.tinygpt import GPTConfig, TinyGPT

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["bert", "gpt2", "tinygpt"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    return {"bert": build_family("bert", tmp_path_factory.mktemp("bert")).eval(),
            "gpt2": conv1d_to_linear(build_family("gpt2", tmp_path_factory.mktemp("gpt2"))).eval(),
            "tinygpt": TinyGPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16)).eval()}


def _inputs(batch, seq, padded=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 250, (batch, seq), generator=g)  # < 256: valid bytes for TinyGPT too
    mask = torch.ones_like(ids)
    if padded and batch > 1:
        mask[-1, seq // 2:] = 0  # right padding (TinyGPT ignores the mask: causal, so real positions agree)
    return ids, mask


def _check_same(rt, model, family, shapes=((2, 8), (3, 12))):
    a = ADAPTERS[family]
    with torch.no_grad():
        for batch, seq in shapes:
            ids, mask = _inputs(batch, seq)
            want = forward(model, a, ids, mask)
            for _ in range(R.TRACE_AFTER):  # a new shape runs eagerly, then traced
                torch.testing.assert_close(rt(ids, mask), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_matches_eager(family, models):
    model = models[family]
    rt, applied, why = apply_runtime(model, ADAPTERS[family], "freeze", _inputs(2, 8, padded=False))
    assert (applied, why) == ("freeze", None) and isinstance(rt, Runtime) and rt.runtime == "freeze"
    # traced without padding at (2, 8) (no mask, as eager transformers drops an all-ones one); the padded
    # (2, 8) and (3, 12) batches get their own traces, with the mask as an input, not baked in
    _check_same(rt, model, family)
    assert sum(g is not None for g in rt._graphs.values()) == 3
    ids, mask = _inputs(2, 8)
    mask[0, 3:], mask[1] = 0, 1  # other padding, same shape: the (2, 8) masked trace must follow the new mask
    with torch.no_grad():
        torch.testing.assert_close(rt(ids, mask), forward(model, ADAPTERS[family], ids, mask), atol=1e-4, rtol=1e-4)
    assert len(rt._graphs) == 3
    assert rt.model is model and rt.state_dict().keys() == {"model." + k for k in model.state_dict()}


@pytest.mark.parametrize("family", ["bert", "tinygpt"])
def test_freeze_after_int8(family, models):
    model = apply_quantize(copy.deepcopy(models[family]), ADAPTERS[family], "int8")
    rt, applied, why = apply_runtime(model, ADAPTERS[family], "freeze", _inputs(2, 8))
    assert (applied, why) == ("freeze", None)
    _check_same(rt, model, family)


def test_eager_is_the_model_itself(models):
    assert apply_runtime(models["bert"], ADAPTERS["bert"], "eager", _inputs(1, 4)) == (models["bert"], "eager", None)
    with pytest.raises(CompressError, match="runtime must be one of"):
        apply_runtime(models["bert"], ADAPTERS["bert"], "onnx", _inputs(1, 4))


def test_freeze_falls_back_when_trace_fails(models, monkeypatch):
    def no_trace(*args, **kwargs):
        raise RuntimeError("cannot trace this model")
    monkeypatch.setattr(torch.jit, "trace", no_trace)
    model = models["bert"]
    rt, applied, why = apply_runtime(model, ADAPTERS["bert"], "freeze", _inputs(2, 8))
    assert rt is model and applied == "eager" and "cannot trace this model" in why


def test_freeze_falls_back_when_outputs_differ(models, monkeypatch):
    monkeypatch.setattr(R, "_freeze", lambda call, ids, mask: (lambda i, m: call(i, m) + 1.0))
    rt, applied, why = apply_runtime(models["tinygpt"], ADAPTERS["tinygpt"], "freeze", _inputs(2, 8))
    assert rt is models["tinygpt"] and applied == "eager" and "differs from eager" in why


def test_a_shape_that_fails_to_trace_runs_eagerly(models, monkeypatch):
    model = models["gpt2"]
    rt, applied, _ = apply_runtime(model, ADAPTERS["gpt2"], "freeze", _inputs(2, 8))
    assert applied == "freeze"
    monkeypatch.setattr(R, "_freeze", lambda *a: (_ for _ in ()).throw(RuntimeError("shape trouble")))
    _check_same(rt, model, "gpt2", shapes=((3, 12),))  # new shape: trace fails, the call still answers
    assert "shape trouble" in rt.error


def test_compile_falls_back(models, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = models["gpt2"]
    rt, applied, why = apply_runtime(model, ADAPTERS["gpt2"], "compile", _inputs(2, 8))
    assert rt is model and applied == "eager" and "no C++ compiler" in why


@pytest.mark.slow
def test_compile_matches_eager(models):
    """A real torch.compile of a tiny BERT: ~30 s of inductor compile on these CPUs."""
    model = models["bert"]
    rt, applied, why = apply_runtime(model, ADAPTERS["bert"], "compile", _inputs(2, 8, padded=False))
    assert (applied, why) == ("compile", None)
    _check_same(rt, model, "bert")


def test_freeze_after_fnet(models):
    from compress.techniques.fnet import apply_fnet
    model = apply_fnet(copy.deepcopy(models["bert"]), ADAPTERS["bert"])
    rt, applied, why = apply_runtime(model, ADAPTERS["bert"], "freeze", _inputs(2, 8, padded=False))
    assert (applied, why) == ("freeze", None)
    _check_same(rt, model, "bert")  # padded: the traced graph takes the per-length DFT path


def test_a_copy_retraces_for_its_own_weights(models):
    model = copy.deepcopy(models["bert"])
    rt, applied, _ = apply_runtime(model, ADAPTERS["bert"], "freeze", _inputs(2, 8))
    twin = copy.deepcopy(rt)  # e.g. the GPU benchmark copies the model before .to("cuda")
    assert applied == "freeze" and twin._graphs == {} and twin.model is not model
    with torch.no_grad():
        twin.model.encoder.layer[0].output.dense.weight.mul_(2.0)  # the copy's weights, not the original's
    _check_same(twin, twin.model, "bert", shapes=((2, 8),))
    _check_same(rt, model, "bert", shapes=((2, 8),))


def test_one_off_shapes_are_not_traced(models, monkeypatch):
    """Generation calls with a new length every step: tracing each would cost far more than it saves."""
    model = models["tinygpt"]
    rt, applied, _ = apply_runtime(model, ADAPTERS["tinygpt"], "freeze", _inputs(1, 4))
    assert applied == "freeze" and len(rt._graphs) == 1
    ids = torch.randint(5, 250, (1, 16))
    with torch.no_grad():
        for t in range(5, 16):
            torch.testing.assert_close(rt(ids[:, :t]), forward(model, ADAPTERS["tinygpt"], ids[:, :t]))
    assert len(rt._graphs) == 1

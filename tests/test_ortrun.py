"""ONNX Runtime as a runtime (compress/techniques/ortrun.py): outputs equal PyTorch's (1e-4 max abs on hidden states, 1e-4
relative on logits) on the evaluation sentences, for MiniLM plain and stacked, tinygpt and every upload family; int8
through onnxruntime's own quantization; int4 and half fall back to eager with the reason; the size is the file's."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.models.adapters import forward
from conftest import ROOT

pytestmark = pytest.mark.slow


def _outputs(bundle, base, n=64):
    """The model's outputs at the real tokens of the first n evaluation sentences, (N, H or V)."""
    outs = []
    for ids, mask in evaluate.batches(base, evaluate.eval_set()[0][:n], 32):
        outs.append(forward(bundle.model, base.adapter, ids, mask).float()[mask.bool()])
    return torch.cat(outs)


def _pair(base, recipe):
    """(onnxruntime compressed, eager compressed) of the same recipe."""
    ort = C.compress(base, dataclasses.replace(recipe, runtime="onnxruntime"))
    assert ort.applied["runtime_applied"] == "onnxruntime", ort.applied.get("runtime_reason")
    return ort, C.compress(base, dataclasses.replace(recipe, runtime="eager"))


@pytest.mark.parametrize("recipe", [C.Recipe(), C.Recipe(layers=3, heads=8, rank_mode="ratio", rank=0.5)],
                         ids=["plain", "stacked"])
def test_minilm_hidden_states_equal_pytorch(minilm, recipe):
    ort, eager = _pair(minilm, recipe)
    got, want = _outputs(ort, minilm), _outputs(eager, minilm)
    assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-4
    assert ort.applied["runtime_setting"] == "fp32"
    assert C.numbers(ort)["size_bytes"] == ort.model.file_bytes  # the .onnx file's bytes


def test_tinygpt_logits_equal_pytorch():
    base = C.load_model("tinygpt")
    ort, eager = _pair(base, C.Recipe(layers=3))
    got, want = _outputs(ort, base), _outputs(eager, base)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()


@pytest.mark.parametrize("family", C.FAMILIES)
def test_every_upload_family_equals_pytorch(family, tmp_path):
    import shutil
    from builders import build_family
    build_family(family, tmp_path / "m")
    base = C.load_upload(shutil.make_archive(str(tmp_path / "m"), "zip", tmp_path / "m"))
    ort, eager = _pair(base, C.Recipe())
    got, want = _outputs(ort, base, 16), _outputs(eager, base, 16)
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


def test_int8_through_onnxruntime_is_small_and_faithful(minilm):
    int8 = C.compress(minilm, C.Recipe(quant="int8", runtime="onnxruntime"))
    assert int8.applied["runtime_applied"] == "onnxruntime" and "int8" in int8.applied["runtime_setting"]
    assert C.numbers(int8)["size_bytes"] < C.numbers(minilm)["size_bytes"] / 3  # the fp32 graph: the same weights
    q = C.quality(int8, minilm)  # computed from ONNX Runtime's outputs
    assert 0.9 <= q["fidelity"] < 1.0 and q["fidelity_docs"] >= 0.9


@pytest.mark.parametrize("quant", ["int4", "fp16"])
def test_what_is_not_exported_runs_eagerly_with_the_reason(quant):
    base = C.load_model("tinygpt")
    comp = C.compress(base, C.Recipe(quant=quant, runtime="onnxruntime"))
    assert comp.applied["runtime_applied"] == "eager"
    assert comp.applied["runtime_reason"] == f"onnxruntime runs fp32 or int8 here; {quant} is not exported"


@pytest.mark.heavy  # make test-slow only (25 s: a second process, tinygpt's quality): the library's onnxruntime tests
def test_cli_says_onnxruntime_ran():  # and test_quality's CLI apply (the same JSON report) cover it in make test
    out = subprocess.run([sys.executable, "-m", "compress", "apply", "--model", "tinygpt", "--runtime", "onnxruntime",
                          "--batch", "2", "--seq", "16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert rep["runtime_applied"] == "onnxruntime" and rep["compressed"]["quality"]["top1_agreement"] >= 0.999


@pytest.mark.heavy  # make test-slow only: test_what_is_not_exported_runs_eagerly_with_the_reason covers the library
def test_cli_json_stays_clean_when_onnxruntime_falls_back():
    """A fallback is one reason in the CLI's one JSON object (the exporter's graph dump on a failure never gets in)."""
    out = subprocess.run([sys.executable, "-m", "compress", "apply", "--model", "tinygpt", "--emb-bits", "2",
                          "--runtime", "onnxruntime", "--batch", "2", "--seq", "16"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    rep = json.loads(out.stdout)
    assert rep["runtime_applied"] == "eager" and rep["runtime_reason"].startswith("onnxruntime: the 2-bit table")

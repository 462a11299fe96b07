"""ONNX Runtime as a runtime (compress/techniques/ortrun.py): outputs equal PyTorch's (1e-4 max abs on hidden states, 1e-4
relative on logits) on the evaluation sentences, for MiniLM plain, stacked and with a 2-bit table (exported packed),
tinygpt and every upload family; int8 through onnxruntime's own quantization; int4 stored as int4 and run as int8 (its
zip holds the int4 weights, a reload builds the same session); half falls back to eager with the reason; the size is
the file's."""
import copy
import dataclasses
import json
import subprocess
import sys
import zipfile

import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.models.adapters import forward
from compress.techniques import int4, ortrun, quantize
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


@pytest.mark.parametrize("recipe", [C.Recipe(), C.Recipe(layers=3, heads=8, rank_mode="ratio", rank=0.5),
                                    C.Recipe(layers=2, emb_bits=2)], ids=["plain", "stacked", "2-bit table"])
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


def test_half_is_not_exported_and_runs_eagerly_with_the_reason():
    base = C.load_model("tinygpt")
    comp = C.compress(base, C.Recipe(quant="fp16", runtime="onnxruntime"))
    assert comp.applied["runtime_applied"] == "eager"
    assert comp.applied["runtime_reason"] == "onnxruntime runs fp32, int8 or int4 (as int8) here; fp16 is not exported"


def test_int4_is_stored_as_int4_and_run_as_int8_and_reloads_to_the_same_session(tmp_path):
    base = C.load_model("tinygpt")
    ort, eager = _pair(base, C.Recipe(quant="int4"))
    assert ort.applied["runtime_setting"].startswith("int4 stored, run as int8")
    assert C.numbers(ort)["size_bytes"] == C.numbers(eager)["size_bytes"]  # int4's bytes, not the session's int8
    got, want = _outputs(ort, base, 16), _outputs(eager, base, 16)
    top1 = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert top1 >= 0.9 and (got - want).abs().max().item() > 0  # int8's rounding on top of int4's, nothing else
    path = C.save_compressed(ort, tmp_path / "m.zip")
    names = zipfile.ZipFile(path).namelist()
    assert "weights.safetensors" in names and "model.onnx" not in names
    back = C.load_compressed(path)
    assert back.applied["runtime_applied"] == "onnxruntime"
    assert torch.equal(_outputs(back, base, 16), got)


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
    out = subprocess.run([sys.executable, "-m", "compress", "apply", "--model", "tinygpt", "--quant", "fp16",
                          "--runtime", "onnxruntime", "--batch", "2", "--seq", "16"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)  # (the 2-bit table, once a fallback, now runs in ONNX Runtime)
    rep = json.loads(out.stdout)
    assert rep["runtime_applied"] == "eager" and rep["runtime_reason"].startswith("onnxruntime runs fp32, int8")


def test_a_zip_saying_onnxruntime_without_its_graph_runs_the_weights_it_holds(tmp_path):
    """Hand-made: an eager int8 zip whose recipe.json says onnxruntime. The replay's own float model (never healed,
    never the upload's) must not become the session: the upload's weights run (here eagerly, with the reason)."""
    base = C.load_model("tinygpt")
    eager = C.compress(base, C.Recipe(quant="int8"))
    src, out = C.save_compressed(eager, tmp_path / "e.zip"), tmp_path / "o.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as z:
        for n in zin.namelist():
            data = zin.read(n)
            z.writestr(n, json.dumps({**json.loads(data), "runtime": "onnxruntime"}) if n == "recipe.json" else data)
    back = C.load_compressed(out)
    assert torch.equal(_outputs(back, base, 16), _outputs(eager, base, 16))


@pytest.mark.parametrize("quant", ["int4", "int8"])
def test_healing_simulates_exactly_what_onnx_runtime_runs(tiny_bert, quant):
    """The step's simulation for runtime onnxruntime (ortrun.fake_ort: quantize_dynamic's per-channel int8 weights,
    on int4's rounding for int4, and DynamicQuantizeLinear's uint8 activations) is what the session outputs, where
    the eager simulation of the same quant is not; int4's 8-bit tables (and int8's, with quant_embeddings off) are
    left as they are (the MatMuls alone are quantized)."""
    r = C.Recipe(quant=quant, runtime="onnxruntime", quant_embeddings=quant == "int4")
    comp = C.compress(tiny_bert, r)
    assert comp.applied["runtime_applied"] == "onnxruntime"
    ids = torch.randint(5, 1000, (3, 17), generator=torch.Generator().manual_seed(0))
    mask, a = torch.ones_like(ids), tiny_bert.adapter
    model = int4.unpacked(C.compress(tiny_bert, C.Recipe(quant="int4")).model) if quant == "int4" else \
        copy.deepcopy(tiny_bert.model)
    with torch.no_grad():
        ort = forward(comp.model, a, ids, mask)
        with ortrun.fake_ort(model, a, r):
            sim = forward(model, a, ids, mask)
        with (int4.fake_int4(model, a) if quant == "int4" else quantize.fake_int8(model)):
            eager = forward(model, a, ids, mask)
    assert (sim - ort).abs().max() < 1e-4 < (eager - ort).abs().max()

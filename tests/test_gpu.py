"""The GPU code paths, where a CUDA GPU is present (they skip cleanly elsewhere): latency with CUDA events,
int8 kept off the GPU, and every technique's modules giving on the GPU what they give on the CPU."""
import copy

import pytest
import torch

import compress as C
from compress.models.adapters import forward
from compress.techniques.int4 import LowBitLinear

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_gpu_benchmark_times_both_models_and_leaves_int8_on_the_cpu(tiny_gpt):
    half = C.compress(tiny_gpt, C.Recipe(quant="fp16"))
    lat = C.benchmark(tiny_gpt, half, batch=2, seq=16, device="cuda")
    assert set(lat) == {"original", "compressed"}
    assert all(v["runs"] == 7 and v["p10"] <= v["p50"] <= v["p90"] for v in lat.values())
    int8 = C.compress(tiny_gpt, C.Recipe(quant="int8"))
    assert set(C.benchmark(tiny_gpt, int8, batch=2, seq=16, device="cuda")) == {"original"}  # CPU-only kernels
    assert next(tiny_gpt.model.parameters()).device.type == "cpu"  # the shared original never moves


def test_gpu_report_has_gpu_latency(tiny_gpt):
    rep = C.report(tiny_gpt, C.compress(tiny_gpt, C.Recipe(quant="int8")), batch=2, seq=16)
    assert rep["workload"]["gpu"]["gpu"] and rep["original"]["gpu_latency_ms"]["runs"] == 7
    assert rep["compressed"]["gpu_latency_ms"] is None


@pytest.mark.parametrize("recipe", [dict(heads=1, ffn=0.5), dict(rank_mode="ratio", rank=0.5), dict(quant="int4"),
                                    dict(emb_bits=4), dict(quant="fp16"), dict(layers=1, quant="int4", emb_bits=2)])
def test_compressed_model_gives_on_the_gpu_what_it_gives_on_the_cpu(tiny_gpt, recipe):
    comp = C.compress(tiny_gpt, C.Recipe(**recipe))
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    cpu = forward(comp.model, comp.adapter, ids).float()
    gpu = forward(copy.deepcopy(comp.model).cuda(), comp.adapter, ids.cuda()).float().cpu()
    tol = 2e-2 if recipe.get("quant") == "fp16" else 1e-3
    torch.testing.assert_close(gpu, cpu, atol=tol * cpu.abs().max().item(), rtol=tol)


def test_int4_linear_on_the_gpu_matches_its_cpu_unpacking():
    torch.manual_seed(0)
    layer = LowBitLinear.from_linear(torch.nn.Linear(256, 96))
    x = torch.randn(5, 256)
    torch.testing.assert_close(copy.deepcopy(layer).cuda()(x.cuda()).cpu(), layer(x), atol=1e-4, rtol=1e-4)


def test_the_curve_over_t_runs_on_the_gpu(tiny_gpt):
    from compress.bench import seqlen
    rows = seqlen.curve(tiny_gpt, (8, 64), runs=7, log=lambda m: None, device="cuda")
    assert {r["T"] for r in rows} == {8, 64} and "sdpa" in {r["model"] for r in rows}
    assert all(r["ms"] > 0 and r["peak_mb"] >= 0 for r in rows)
    assert f"GPU {torch.cuda.get_device_name(0)}" in seqlen.markdown("tiny-gpt", rows, "cuda")
    assert next(tiny_gpt.model.parameters()).device.type == "cpu"  # the shared original never moves

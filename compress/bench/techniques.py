"""The benchmark table: each technique alone and stacked, measured here, as markdown (BENCHMARKS.md).

Speed goals are checked here, never in tests: timings on a shared machine only mean something as
ratios of original vs compressed runs interleaved in one process.
"""
import dataclasses
import time

from ..measure import evaluate, core as measure
from ..measure.metrics import has_shape, quality_words
from ..table import pipeline
from ..models.bundled import load_model
from ..table.presets import BY_NAME
from ..errors import CompressError
from ..table.recipe import Recipe
from ..table.steps import STEPS

ALONE = [Recipe(**ex) for s in STEPS if not s.trains for ex in s.examples if ex not in s.slow]  # from the table
ATTENTION = [Recipe(attention="local", window=8), Recipe(attention="strided", stride=4),  # short sentences: a small W
             Recipe(attention="local+strided", window=8, stride=4), Recipe(attention="lowrank", attn_rank=128),
             Recipe(attention="kernel", features=64), Recipe(attention="linear"),
             Recipe(attention="lsh", buckets=4, window=8), Recipe(pool=2, pool_at=2)]
SETS = {
    "techniques": ALONE + [  # each step of the table alone (its examples), then stacked as the article does
        Recipe(emb_bits=2, quant="int8"), Recipe(emb_bits=2, quant="int4"), Recipe(layers=3, emb_bits=2, quant="int4"),
        Recipe(heads=2, quant="int8"), Recipe(ffn=0.5, quant="int8"), Recipe(fnet=True, quant="int8"),
        Recipe(heads=2, ffn=0.5, rank_mode="ratio", rank=0.5, quant="int8", runtime="freeze"),
        Recipe(fnet=True, ffn=0.5, rank_mode="ratio", rank=0.5, quant="int8", runtime="freeze"),
    ],
    "healed": [  # healing: 300 steps (about 80 s each on 2 cores) on the default corpus
        Recipe(rank_mode="ratio", rank=0.5, heal_steps=300), Recipe(rank_mode="ratio", rank=0.25, heal_steps=300),
        Recipe(heads=2, ffn=0.5, heal_steps=300, quant="int8"), Recipe(fnet=True, heal_steps=300, quant="int8"),
        Recipe(heads=2, ffn=0.5, rank_mode="ratio", rank=0.5, heal_steps=300, quant="int8", runtime="freeze"),
        Recipe(layers=3, emb_bits=2, heal_steps=300, quant="int8"),
        Recipe(layers=3, emb_bits=2, heal_steps=300, quant="int4"),  # healed with int4 rounding simulated
    ],
    "tenx": [BY_NAME["about 10x"].build()],  # the presets' (compress/table/presets.py): by steps, no time cap
    "twentyx": [BY_NAME["about 20x"].build()],  # 3 blocks (every head) at int4, 68% of the rows product-quantized
    "vocab": [Recipe(vocab=v) for v in (0.5, 0.25, 0.1)] + [  # vocabulary pruning alone and stacked (unhealed)
        Recipe(vocab=0.25, quant="int8"), Recipe(emb_bits=2, quant="int8"), Recipe(vocab=0.25, emb_bits=2, quant="int8"),
        Recipe(layers=3, heads=10, head_score="gradient", ffn=0.5, vocab=0.18, emb_bits=2, quant="int8")],
    "attention": ATTENTION,  # issue 28's variants, unhealed
    "attention-healed": [dataclasses.replace(r, heal_steps=150) for r in ATTENTION],  # rows show unhealed too
    "quick": [Recipe(quant="int8"), Recipe(heads=2, ffn=0.5, quant="int8", runtime="freeze")],
    "onnx": [Recipe(runtime="onnxruntime"), Recipe(quant="int8"), Recipe(quant="int8", runtime="onnxruntime")],
    "static": [  # the static end: the transformer replaced by a token table (compress/techniques/static.py), then healed
        Recipe(static=True), Recipe(static=True, quant="int8"), Recipe(static=True, emb_rank=0.5, quant="int8"),
        Recipe(static=True, quant="int8", heal_steps=400, heal_lr=1e-2)],
    "static-dims": [Recipe(static=True, vocab=0.49, emb_rank=f, quant="int8", heal_steps=1600, heal_lr=1e-2,
                           heal_text="both") for f in (0.67, 0.34)],  # the fitted table at 256 and 128 dimensions
    "static-attn": [Recipe(static=True, static_attn=True, vocab=0.49, quant="int8", heal_steps=1600, heal_lr=3e-3,
                           heal_text="both")],  # the fitted table with one attention layer
    "static-all": [BY_NAME["static"].build(),  # the preset: the fitted table on all three corpora (FOLDOC's too),
                   dataclasses.replace(BY_NAME["static"].build(), static_attn=True, heal_lr=3e-3),  # with one
                   dataclasses.replace(BY_NAME["static"].build(), emb_rank=0.67)],  # attention layer; 256 dimensions
    "static-pca": [dataclasses.replace(BY_NAME["static"].build(), emb_rank=f) for f in (0.67, 0.34)],  # 256, 128
    "peers": [Recipe(quant="int8"),  # beside ONNX Runtime and Model2Vec (bench --peers, compress/bench/peers.py)
              Recipe(static=True, vocab=0.49, quant="int8", heal_steps=1600, heal_lr=1e-2, heal_text="both"),
              Recipe(static=True, vocab=0.5, emb_bits=2, heal_steps=1600, heal_lr=1e-2, heal_text="both")],  # packed
    "gpu": [Recipe(quant="fp16"), Recipe(quant="bf16"), Recipe(heads=2, ffn=0.5), Recipe(rank_mode="ratio", rank=0.5),
            Recipe(heads=2, ffn=0.5, rank_mode="ratio", rank=0.5), Recipe(layers=3, emb_bits=2, quant="int4"),
            Recipe(fnet=True), Recipe(quant="int8")],  # what a GPU runs (int8 stays on the CPU: its GPU cells n/a)
}


def run(model: str, recipes, batch=8, seq=128, runs=7, log=print, workload="ids", text=None) -> list[dict]:
    """A row per recipe (pipeline.row), measured here; text: the healing text of healed recipes (None: default)."""
    base = load_model(model)
    rows = []
    for r in recipes:
        t = time.perf_counter()
        try:
            comp = pipeline.compress(base, r, texts=text)
        except CompressError as e:  # e.g. FNet on a decoder: said under the table
            rows.append({"recipe": r.describe(), "skipped": str(e)})
            log(f"{r.describe()}: skipped: {e}")
            continue
        rep = pipeline.report(base, comp, batch, seq, runs, workload)
        lat = {k: rep[k]["latency_ms"] for k in ("original", "compressed")}
        row = {"recipe": r.describe(), **pipeline.row(rep["original"], rep["compressed"], lat, r),
               "runtime": rep["runtime_applied"]}
        if rep["workload"]["gpu"]:  # GPU latency too (CUDA events), where a GPU is present; int8 is CPU-only
            g = {k: rep[k]["gpu_latency_ms"] for k in ("original", "compressed")}
            row.update({"GPU p50 ms orig": g["original"]["p50"], "GPU p50 ms": (g["compressed"] or {}).get("p50", "n/a"),
                        "GPU x faster": round(g["original"]["p50"] / g["compressed"]["p50"], 2) if g["compressed"] else "n/a"})
        if r.heal_steps:  # the same recipe without healing, on the same held-out set
            raw = pipeline.compress(base, dataclasses.replace(r, heal_steps=0, runtime="eager"))
            row.update({f"unhealed {k}": v for k, v in evaluate.quality(raw, base).items()},
                       **{"heal steps": rep["heal"]["steps_run"], "heal s": round(rep["heal"]["seconds"])})
        rows.append(row)
        log(f"{row} ({time.perf_counter() - t:.0f} s)")
    return rows


def markdown(model: str, rows: list[dict], batch: int, seq: int, workload: str = "ids") -> str:
    cpu, gpu = measure.cpu_info(), measure.gpu_info()
    machine = (f"CPU {measure.machine_line(cpu)}"
               + (f"; GPU {gpu['gpu']}, CUDA {gpu['cuda']}" if gpu else ""))
    shape = f"batch {batch} x seq {seq}" + (" of real text" if workload == "passages" else "") \
        if has_shape(workload) else f"workload {pipeline.WORKLOADS[workload]}"
    head = (f"### {model}: {shape}, {machine}\n\nOriginal: measured in the same run, interleaved "
            f"with each compressed model (p50 of >= 7 runs). Quality: {quality_words(load_model(model))}.\n\n")
    lines = measure.markdown_rows([r for r in rows if "skipped" not in r])
    lines += [f"\nNot applicable: {r['recipe']}: {r['skipped']}." for r in rows if "skipped" in r]
    return head + "\n".join(lines) + "\n"



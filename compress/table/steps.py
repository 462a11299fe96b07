"""THE technique table: the ordered steps of a compression. The order of the list is the order of the pipeline.

Each step declares the Recipe fields it owns (fields.Field: kind, range, default, CLI flag, help, control),
when it is active, how it applies to the model being built (ctx), the one place a combination or a model is
refused (refuse(bundle, recipe) -> reason; bundle None: the combination alone), what healing must simulate
for it (quantization-aware rounding), its teaching text and the example values the tests and the bench use.
A step that `selects` a value of another step's field (half: quant=fp16 or bf16) adds those values to its choices.
Recipe, the CLI, the URL, the Compress page's controls, the pair tests, the bench and README's technique table
are generated from this list: a new technique is one module plus one entry here.
"""
import dataclasses

from ..techniques import (attention, factorize, fnet, heads, heal, int4, layers, lowbit, ortrun, pool, pooler,
                          positions, pq, quantize, runtime, sensitivity, static, vocab)
from ..models.adapters import ADAPTERS, tied_embeddings
from ..measure.general import HEAL_TEXTS
from .fields import Field
from .step import Step, family_refusals


def _count(name):
    def refuse(b, r):
        f, v = FIELDS[name], getattr(r, name)
        n = b.info[f.most] if b is not None else None
        if n is not None and isinstance(v, int) and v > n:
            return f"{b.name} has {n} {f.unit}: keep a whole number from 1 to {n} (0 = all), got {v}"
        return None
    return refuse


def _heads_refuse(b, r):
    if b is None or not isinstance(r.heads, tuple):
        if (why := _count("heads")(b, r)) or b is None or not isinstance(r.heads, int) or not r.heads:
            return why
    return heads.refuse(b, r)


def _off(what, variants):
    return lambda r: None if r.attention in variants else f"only with {what} attention"


def _tied(b):
    return b is not None and tied_embeddings(b.model, b.adapter)


STEPS = [
    Step("static", "static token table", (
        Field("static", "bool", False, "the whole transformer replaced by a token table distilled from it: a "
              "sentence is the mean of its tokens' rows (encoders only)", "Static: a token table instead of the "
              "transformer"),
        Field("static_attn", "bool", False, "one small attention layer over the static table's rows, fitted with it",
              "with one attention layer", off=lambda r: None if r.static else "only with the static table")),
        apply=lambda ctx, r: static.apply_static(ctx, r.static_attn), active=lambda r: r.static, changes_blocks=True,
        refuse=static.refuse, describe=lambda r: "static table" + (" + one attention layer" if r.static_attn else ""),
        examples=({"static": True}, {"static": True, "static_attn": True}),
        teach=static.TEACH),
    Step("layers", "fewer layers", (
        Field("layers", "count", 0, "transformer blocks kept, those that change their input most (0 = all)",
              "Transformer blocks (layers) kept", most="layers", unit="blocks"),),
        apply=layers.layers_step, refuse=_count("layers"), describe=lambda r: f"{r.layers} layers",
        examples=({"layers": 3},), changes_blocks=True,
        teach="Fewer layers: keep the k whole blocks that change their input most (Block Influence, 1 - cos(input, "
              "output) on calibration text; ShortGPT, Men et al. 2024); about L/k times faster. Heal afterwards: each "
              "kept block learns to match the original block it came from. On MiniLM this heals better than thinning "
              "every block to the same size."),
    Step("heads", "head pruning", (
        Field("heads", "counts", 0, "attention heads kept per block: K, or K1,K2,... one per block (0 = all); with "
              "grouped-query attention (Llama family) a multiple of the key/value head count, every group keeping "
              "its most important query heads (or a multiple of the group size: the least important whole groups go)",
              "Attention heads kept per layer", most="heads", unit="heads per block", allowed=lambda b: heads.allowed_heads(b.info["heads"], b.info.get("kv_heads", b.info["heads"]))),
        Field("head_score", "choice", "weight", "how heads are ranked: weight (data-free norms) or gradient "
              "(Michel et al. 2019, on calibration text)", "Head importance", choices=("weight", "gradient"),
              off=lambda r: None if r.heads else "only with fewer heads")),
        apply=heads.heads_step, active=lambda r: r.heads != 0, refuse=_heads_refuse, changes_blocks=True,
        describe=lambda r: f"{r.heads if isinstance(r.heads, int) else list(r.heads)} heads"
                           + (" (gradient)" if r.head_score == "gradient" else ""),
        examples=({"heads": 2},),
        teach="Head pruning: keep the k most important attention heads per layer and physically delete the rest "
              "(their q/k/v rows and output columns). The article: fewer heads and a narrower FFN give ~2x size and "
              "2-3x speed; quality drops unless healed. weight = data-free norms; gradient = Michel et al. 2019, how "
              "much the loss on calibration text moves when a head is masked."),
    Step("ffn", "FFN narrowing", (
        Field("ffn", "fraction", 1.0, "fraction of FFN neurons kept per block", "FFN neurons kept", lo=0.05),),
        apply=lambda ctx, r: heads.narrow_ffn(ctx.model, ctx.base.adapter, r.ffn), changes_blocks=True,
        describe=lambda r: f"FFN {r.ffn:g}", examples=({"ffn": 0.5},),
        teach="FFN narrowing: keep this fraction of the feed-forward neurons in every layer (the least important, by "
              "weight norms, are deleted). The FFN holds about 2/3 of a block's weights."),
    Step("fnet", "FNet", (
        Field("fnet", "bool", False, "attention replaced by Fourier mixing (encoders only)",
              "FNet: Fourier mixing instead of attention"),),
        apply=lambda ctx, r: fnet.apply_fnet(ctx.model, ctx.base.adapter), changes_blocks=True,
        refuse=lambda b, r: None if not r.fnet else
        "FNet replaces attention, so pruning its heads makes no sense: choose FNet or head pruning" if r.heads else
        f"FNet mixes in future tokens, so it cannot apply to {b.name}, a causal (decoder) model"
        if b is not None and b.adapter.causal else None,
        describe=lambda r: "FNet", examples=({"fnet": True},),
        teach="FNet (Lee-Thorp et al. 2021): attention is replaced by the real part of a 2D Fourier transform over "
              "(tokens, hidden); no weights at all. Large size and speed gains, but it needs healing: the rest of the "
              "model was trained with attention."),
    Step("attention", "efficient attention", (
        Field("attention", "choice", "none", "attention scores computed another way, same q, k, v: local window, strided, "
              "both across heads, lowrank (Linformer), kernel (Performer FAVOR+), linear (elu+1), lsh (Reformer's hash "
              "buckets)", "Efficient attention", choices=attention.VARIANTS, widget="select"),
        Field("window", "int", 32, "local: each token sees the tokens less than W away (a decoder: its W latest); "
              "lsh: the chunk length", "Window W (tokens)", lo=0, hi=65536, step=1, off=_off("window", attention.WINDOWED)),
        Field("stride", "int", 8, "strided: each token sees every s-th token from itself", "Stride s (tokens)", lo=0,
              hi=65536, step=1, off=_off("stride", attention.STRIDED)),
        Field("attn_rank", "int", 64, "lowrank: keys and values projected from T positions to k", "Projected length k",
              lo=0, hi=65536, step=1, off=_off("lowrank", ("lowrank",))),
        Field("features", "int", 64, "kernel: m random features per head", "Random features m", lo=0, hi=65536, step=1,
              off=_off("kernel", ("kernel",))),
        Field("buckets", "int", 8, "lsh: hash buckets n (1 or even): a query sees the keys of its bucket in its chunk's "
              "window", "Hash buckets n", lo=0, hi=65536, step=1, off=_off("lsh", ("lsh",)))),
        apply=lambda ctx, r: attention.apply_attention(ctx.model, ctx.base.adapter, r, ctx.base.info),
        active=lambda r: r.attention != "none", refuse=attention.refuse, describe=attention.describe,
        examples=({"attention": "local", "window": 4}, {"attention": "strided", "stride": 2},
                  {"attention": "local+strided", "window": 4, "stride": 2}, {"attention": "lowrank", "attn_rank": 8},
                  {"attention": "kernel", "features": 16}, {"attention": "linear"}, {"attention": "lsh", "buckets": 4}),
        teach=attention.TEACH),
    Step("pool", "token pooling", (
        Field("pool", "choice", 1, "tokens averaged into one after the first pool_at blocks (1 = none; encoders only)",
              "Pool tokens by", choices=(1, 2, 4), fmt=lambda v: "no pooling" if v == 1 else f"{v}"),
        Field("pool_at", "int", 2, "blocks run on every token before pooling", "Pool after block", lo=0, hi=256, step=1,
              off=lambda r: None if r.pool != 1 else "only with pooling")),
        apply=lambda ctx, r: pool.apply_pool(ctx.model, ctx.base.adapter, r.pool, r.pool_at),
        active=lambda r: r.pool != 1, refuse=pool.refuse, describe=lambda r: f"pool by {r.pool} after block {r.pool_at}",
        examples=({"pool": 2, "pool_at": 1},), teach=pool.TEACH),
    Step("pooler", "unused pooler dropped", (
        Field("drop_pooler", "bool", False, "drop the encoder's pooler, which sentence embeddings (the mean of the "
              "last hidden states) never read", "Drop the unused pooler"),),
        apply=lambda ctx, r: pooler.drop(ctx.model, ctx.base.adapter), refuse=pooler.refuse,
        describe=lambda r: "no pooler", examples=({"drop_pooler": True},), teach=pooler.TEACH),
    Step("positions", "fewer positions", (Field(
        "positions", "choice", 0, "the learned position table cut to its first N rows: texts of up to N tokens read "
        "the same, longer ones are cut (0 = all)", "Positions kept", choices=positions.CHOICES, fmt=positions.label),),
        apply=positions.step, refuse=positions.refuse, describe=lambda r: f"{r.positions} positions",
        examples=({"positions": 64},), teach=positions.TEACH),
    Step("vocab", "vocabulary pruning", (
        Field("vocab", "fraction", 1.0, "word-table rows kept, a fraction of the vocabulary: the healing text's "
              "tokens first; the others read a kept row", "Vocabulary kept (fraction of tokens)", lo=0.05),
        Field("vocab_cover", "choice", "nearest", "what a dropped token reads: nearest (the kept row of highest "
              "cosine), resplit (its kept pieces' mean row), output (the kept token embedded most like it) or sparse "
              "(a weighted sum of 4 kept rows that rebuilds its own)", "Dropped tokens read", choices=vocab.COVERS,
              off=lambda r: None if r.vocab != 1 else "only with vocabulary pruning"),
        Field("vocab_keep", "choice", "text", "which rows are kept: text (the healing text's tokens, most frequent "
              "first) or english (by their share of the healing text plus of English, wordfreq's list)", "Rows kept by",
              choices=vocab.KEEPS, off=lambda r: None if r.vocab != 1 else "only with vocabulary pruning")),
        apply=lambda ctx, r: vocab.prune(ctx.model, ctx.base.adapter, ctx.base, ctx.texts or heal.heal_texts(
            ctx.base, r.heal_text), round(r.vocab * ctx.base.vocab_size), r.vocab_cover, ctx.replay, r.vocab_keep),
        active=lambda r: r.vocab != 1, refuse=vocab.refuse, teach=vocab.TEACH,
        describe=lambda r: f"vocabulary {r.vocab:g}" + "".join(f" ({v})" for v in (r.vocab_cover, r.vocab_keep)
                                                             if v not in ("nearest", "text")),
        examples=tuple({"vocab": 0.25, "vocab_cover": c} for c in vocab.COVERS)
        + ({"vocab": 0.25, "vocab_keep": "english"},)),
    Step("emb_rank", "embedding rank", (
        Field("emb_rank", "fraction", 1.0, "word-embedding table at rank X * hidden",
              "Word-embedding rank (fraction of hidden size)", lo=0.05),),
        apply=lambda ctx, r: factorize.factorize_embeddings(ctx.model, ctx.base.adapter, r.emb_rank),
        refuse=lambda b, r: None if r.emb_rank == 1 else
        "choose one way to shrink the word-embedding table: a lower rank or fewer bits (on MiniLM 2 bits keep more: "
        "fidelity 0.95 vs 0.70 at rank 0.25, same size)" if r.emb_bits else
        "its output layer shares the word-embedding table (tied weights), so factorizing the table would not make "
        "the model smaller" if _tied(b) else None,
        describe=lambda r: f"embeddings rank {r.emb_rank:g}", examples=({"emb_rank": 0.25},),
        teach=factorize.EMB_TEACH),
    Step("emb_bits", "low-bit embeddings", (
        Field("emb_bits", "choice", 0, "word-embedding table at 4 or 2 bits per weight (0 = as quant says)",
              "Word-embedding table bits", choices=(0, 4, 2), fmt=lambda v: "as Quantization" if v == 0 else f"{v}-bit"),),
        apply=lambda ctx, r: lowbit.low_bit_embeddings(ctx.model, ctx.base.adapter, r.emb_bits),
        active=lambda r: r.emb_bits != 0 and not r.static,  # the static table is packed after healing (static_bits)
        refuse=lambda b, r: "its output layer shares the word-embedding table (tied weights), so a low-bit table "
        "would change its output layer too" if r.emb_bits and _tied(b) else None,
        describe=lambda r: f"embeddings {r.emb_bits}-bit", examples=({"emb_bits": 2},),
        teach=lowbit.TEACH),
    Step("emb_pq", "product-quantized embeddings", (Field(
        "emb_pq", "choice", 0, "word-embedding table product-quantized: pieces of 12, 8, 6 or 4 weights, a byte each "
        "naming one of 256 shared codes (0 = none)", "Word-table product quantization", choices=(0, *pq.DIMS),
        fmt=pq.label), Field(
        "emb_pq_top", "choice", 0, "the most frequent rows of a pruned table, this percent of the vocabulary, at 4 "
        "weights a code with codebooks of their own (both tiers' codebooks in int8)", "Most frequent rows at 2 bits",
        choices=pq.TOPS, fmt=lambda v: "none" if v == 0 else f"{v}% of the vocabulary",
        off=pq.top_off), Field(
        "emb_pq_heal", "bool", False, "healing trains the product-quantized table's codebooks too (the codes stay)",
        "heal the codebooks", off=pq.heal_off)), apply=pq.pq_step, active=lambda r: r.emb_pq != 0, refuse=pq.refuse,
        examples=({"emb_pq": 8}, {"emb_pq": 8, "emb_pq_top": 10, "vocab": 0.5}), describe=pq.describe, teach=pq.TEACH),
    Step("factorize", "low rank", (
        Field("rank_mode", "choice", "none", "ratio: r = X * min(m, n) per layer (the article's dim_ratio); energy: "
              "the smallest r keeping X of sum(S^2); budget: X of the dense params, where they keep most",
              "Rank mode", choices=("none", "ratio", "energy", "budget")),
        Field("rank", "fraction", 1.0, "ratio: of min(m, n); energy: of sum(S^2); budget: of dense params", "Rank X",
              lo=0.02, step=0.01, off=lambda r: None if r.rank_mode != "none" else "only with a rank mode"),
        Field("allocate", "choice", "spectral", "budget mode: spectral (energy per param) or sensitivity (measured "
              "quality drop per layer)", "Budget allocation", choices=("spectral", "sensitivity"),
              off=lambda r: None if r.rank_mode == "budget" else "only with rank mode budget")),
        apply=lambda ctx, r: sensitivity.factorize_step(ctx, r, structural(r)), active=lambda r: r.rank_mode != "none",
        describe=lambda r: f"rank {r.rank_mode} {r.rank:g}"
                           + (" (sensitivity)" if r.rank_mode == "budget" and r.allocate == "sensitivity" else ""),
        examples=({"rank_mode": "ratio", "rank": 0.5},),
        teach=factorize.TEACH),
    Step("heal", "healing", (
        Field("heal_steps", "int", 0, "distillation steps from the original after the steps above (0 = none)",
              "Healing steps (0 = none)", lo=0, hi=100_000, step=50, aliases=("--steps",)),
        Field("heal_lr", "float", 3e-4, "healing learning rate", "learning rate", lo=0, hi=1,
              choices=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3), fmt=lambda v: f"{v:g}", aliases=("--lr",),
              off=lambda r: None if r.heal_steps else "only with healing steps"),
        Field("heal_seed", "int", 0, "healing batch order seed", "seed", lo=0, hi=2**31 - 1, step=1,
              aliases=("--seed",), off=lambda r: None if r.heal_steps else "only with healing steps"),
        Field("heal_text", "choice", "styles", "the healing text when none is given (a family's own wins): styles "
              "(ours, Python's reference, docstrings), general (60,000 WordNet sentences), both, or all (+ FOLDOC's)",
              "Healing text", choices=HEAL_TEXTS, off=lambda r: None if r.heal_steps or r.vocab != 1 else
              "only with healing or vocabulary pruning"),
        Field("heal_corpus", "text", "", "sha256 of the healing text ('' = the default corpus); set by healing"),
        Field("heal_relations", "bool", False, "also distil the last block's attention relations (MiniLM v2)",
              "attention relations (MiniLM v2)", off=lambda r: None if r.heal_steps else "only with healing steps"),
        Field("heal_hidden", "choice", 3, "weight of the hidden-state term: each kept block's hidden states matched to "
              "the original block it came from (encoders; 0 = the pooled output only)", "hidden-state weight",
              choices=(0, 1, 3, 10), off=lambda r: None if r.heal_steps else "only with healing steps")),
        apply=lambda ctx, r: heal.heal_step(ctx, r, rounding_steps(r)), active=lambda r: r.heal_steps > 0, trains=True,
        refuse=heal.refuse,
        describe=lambda r: f"healed {r.heal_steps} steps" + ("" if r.heal_text == "styles" else f" on {r.heal_text}")
        + (" with attention relations" if r.heal_relations else "")
        + (f" (hidden-state weight {r.heal_hidden})" if r.heal_hidden != 3 else ""),
        examples=({"heal_steps": 3},),
        teach=heal.TEACH),
    Step("static_bits", "static table bits",
         apply=lambda ctx, r: lowbit.low_bit_embeddings(ctx.model, ctx.base.adapter, r.emb_bits),
         active=lambda r: r.static and r.emb_bits != 0, after_heal=True,
         simulate=lambda m, a, r: lowbit.fake_table(m, a, r.emb_bits), describe=lambda r: f"table {r.emb_bits}-bit",
         examples=({"static": True, "emb_bits": 4},),
         teach=lowbit.STATIC_TEACH),
    Step("int8", "dynamic int8", (
        Field("quant", "choice", "none", "quantization after healing", "Quantization", choices=("none",),
              widget="select"),
        Field("quant_embeddings", "bool", True, "with int8 / int4: the tables (int4: and a pooler) in 8 bits too",
              "Quantize the tables too", off=lambda r: None if r.quant in ("int8", "int4") else "only with int8/int4")),
        apply=quantize.replace_model(quantize.quantize_model), selects=("quant", "int8"), after_heal=True,
        simulate=lambda m, a, r: ortrun.fake_ort(m, a, r) if r.runtime == "onnxruntime" else quantize.fake_int8(m),
        describe=lambda r: "int8" + ("" if r.quant_embeddings else " (no emb)"), examples=({"quant": "int8"},),
        teach="int8: weights stored in 8 bits with one scale per output channel, activations quantized on the fly "
              "(dynamic); ~4x smaller Linear layers, faster on CPU, small quality loss; with the tables too, the word "
              "and position embeddings in 8 bits with one scale per row. Runs on: CPU only (torch.ao's fbgemm / "
              "qnnpack kernels)."),
    Step("int4", "weight-only int4", apply=quantize.replace_model(int4.int4_model),
         selects=("quant", "int4"), after_heal=True,
         simulate=lambda m, a, r: ortrun.fake_ort(m, a, r) if r.runtime == "onnxruntime" else int4.fake_int4(m, a),
         describe=lambda r: "int4", examples=({"quant": "int4"},),
         teach=int4.TEACH),
    Step("half", "half precision", apply=quantize.replace_model(quantize.quantize_model),
         selects=("quant", "fp16", "bf16"), after_heal=True, describe=lambda r: r.quant, examples=({"quant": "fp16"},),
         teach=quantize.HALF_TEACH),
    Step("runtime", "runtime", (
        Field("runtime", "choice", "eager", "eager, freeze (TorchScript trace + freeze), compile (torch.compile) or "
              "onnxruntime (exported to ONNX, run by ONNX Runtime)", "Runtime", choices=runtime.RUNTIMES + ("onnxruntime",),
              widget="select"),),
        apply=ortrun.runtime_step, active=lambda r: r.runtime != "eager", after_heal=True, describe=lambda r: r.runtime,
        examples=({"runtime": "freeze"}, {"runtime": "compile"}, {"runtime": "onnxruntime"}),
        slow=({"runtime": "compile"},),
        teach="freeze: TorchScript trace + freeze + optimize_for_inference (the article's 15-25%); compile: "
              "torch.compile (slow first run); onnxruntime: the model exported to ONNX and run by ONNX Runtime, fp32, "
              "or with int8 chosen ONNX Runtime's own dynamic int8 (per channel); its size is the .onnx file's; int4 is "
              "stored int4 (the zip's weights) and run as int8 from them. Size is measured before this step; if a "
              "runtime cannot apply (onnxruntime: half, FNet, attention variants), eager runs and the reason is shown."),
]


# what a family's architecture cannot do (its adapter's `refusals`: MPNet's attention variants...), in the step's refuse
STEPS = [family_refusals(s) if any(s.name == n for a in ADAPTERS.values() for n, _ in a.refusals) else s for s in STEPS]


def _fields() -> dict[str, Field]:
    """Every Recipe field in table order; a field's choices gain the values that later steps select."""
    out = {f.name: f for s in STEPS for f in s.fields}
    for s in STEPS:
        if s.selects:
            f = out[s.selects[0]]
            out[f.name] = dataclasses.replace(f, choices=f.choices + tuple(v for v in s.selects[1:] if v not in f.choices))
    return out


FIELDS = _fields()


def rounding_steps(r) -> list:
    """The active after-heal steps that round weights (healing simulates them)."""
    return [s for s in STEPS if s.after_heal and s.simulate and s.is_active(r)]


def structural(r) -> bool:
    """Does the recipe change the blocks before factorization (so the original's spectra no longer apply)?"""
    return any(s.changes_blocks and s.is_active(r) for s in STEPS)


def refusal(bundle, r) -> str | None:
    """The first reason a step refuses this recipe (bundle None: the combination alone), or None. The combination is
    judged first, as a Recipe is built before a model sees it: the same words whichever way it is checked."""
    for b in (None, bundle) if bundle is not None else (None,):
        why = next((why for s in STEPS if (why := s.refuse(b, r))), None)
        if why:
            return why
    return None

"""CLI: python -m compress inspect|apply|heal|bench. apply and heal print ONE JSON object; logs go to stderr."""
import argparse
import dataclasses
import json
import sys

from .recipe import ALLOCATIONS, EMB_BITS, HEAD_SCORES, QUANT_MODES, RANK_MODES, RUNTIMES, CompressError, Recipe


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _heads(text: str):
    try:
        v = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--heads takes K or a per-layer list like 2,2,4,4, got {text!r}") from None
    return v[0] if len(v) == 1 else v


def _recipe_args(p):
    p.add_argument("--recipe", help="recipe.json; the flags below override its fields")
    p.add_argument("--layers", type=int, help="transformer blocks kept, by measured influence (0 = all)")
    p.add_argument("--heads", type=_heads, help="attention heads kept per layer: K, or K1,K2,... per layer (0 = all)")
    p.add_argument("--head-score", choices=HEAD_SCORES, help="how heads are ranked (default weight)")
    p.add_argument("--ffn", type=float, help="fraction of FFN neurons kept per layer, in (0, 1]")
    p.add_argument("--fnet", action="store_true", default=None, help="replace attention by Fourier mixing (encoders)")
    p.add_argument("--emb-rank", type=float, help="word-embedding table at rank X * hidden, X in (0, 1]")
    p.add_argument("--emb-bits", type=int, choices=EMB_BITS, help="word-embedding table at 4 or 2 bits per weight")
    p.add_argument("--rank-mode", choices=RANK_MODES)
    p.add_argument("--rank", type=float, help="ratio: of min(m, n); energy: of sum(S^2); budget: of dense params")
    p.add_argument("--quant", choices=QUANT_MODES)
    p.add_argument("--no-quant-embeddings", action="store_true", help="with int8: keep the word embeddings fp32")
    p.add_argument("--allocate", choices=ALLOCATIONS, help="budget mode: how ranks are spread over layers")
    p.add_argument("--runtime", choices=RUNTIMES, help="eager | freeze (TorchScript) | compile (torch.compile)")


def _recipe(a) -> Recipe:
    base = Recipe()
    if a.recipe:
        try:
            base = Recipe.from_json(open(a.recipe).read())
        except OSError as e:
            raise CompressError(f"cannot read recipe {a.recipe}: {e.strerror}") from None
    over = {"layers": a.layers, "heads": a.heads, "head_score": a.head_score, "ffn": a.ffn, "fnet": a.fnet, "emb_rank": a.emb_rank,
            "emb_bits": a.emb_bits, "rank_mode": a.rank_mode,
            "rank": a.rank, "allocate": a.allocate, "quant": a.quant, "runtime": a.runtime,
            "quant_embeddings": False if a.no_quant_embeddings else None}
    if getattr(a, "cmd", None) == "heal":
        over.update(heal_steps=a.steps, heal_lr=a.lr, heal_seed=a.seed)
    return Recipe.from_dict({**base.to_dict(), **{k: v for k, v in over.items() if v is not None}})


def main(argv=None) -> int:
    p = _Parser(prog="python -m compress", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    ins = sub.add_parser("inspect", help="layers, spectra summary and size breakdown of a model")
    ins.add_argument("--model", default="minilm")
    for cmd, text in (("apply", "compress, measure, print one JSON object"),
                      ("heal", "compress, heal by distillation from the original, measure, print one JSON object")):
        sp = sub.add_parser(cmd, help=text)
        sp.add_argument("--model", default="minilm")
        _recipe_args(sp)
        sp.add_argument("--batch", type=int, default=8)
        sp.add_argument("--seq", type=int, default=128)
        sp.add_argument("--runs", type=int, default=7, help="timed runs per model (>= 7)")
        sp.add_argument("--out", help="save the compressed model here (reload with compress.load_compressed)")
    sp.add_argument("--steps", type=int, default=300, help="healing steps (at most; see --minutes)")
    sp.add_argument("--minutes", type=float, help="a cap on healing time; the steps actually run are reported")
    sp.add_argument("--text", help="a UTF-8 .txt to heal on (one sentence or paragraph per line)")
    sp.add_argument("--lr", type=float, help="healing learning rate (default: the Recipe's, 3e-4)")
    sp.add_argument("--seed", type=int, default=0)
    bp = sub.add_parser("bench", help="each technique alone and stacked: a markdown table (BENCHMARKS.md)")
    bp.add_argument("--model", default="minilm")
    bp.add_argument("--set", default="techniques", choices=["techniques", "healed", "quick"])
    bp.add_argument("--batch", type=int, default=8)
    bp.add_argument("--seq", type=int, default=128)
    bp.add_argument("--runs", type=int, default=7)
    bp.add_argument("--md", help="append the table to this markdown file")
    a = p.parse_args(argv)
    try:
        from . import pipeline
        from .models import load_model
        if a.cmd == "bench":
            from . import bench
            rows = bench.run(a.model, bench.SETS[a.set], a.batch, a.seq, a.runs,
                             log=lambda m: print(m, file=sys.stderr))
            md = bench.markdown(a.model, rows, a.batch, a.seq)
            if a.md:
                with open(a.md, "a") as f:
                    f.write("\n" + md)
            print(md)
            return 0
        if a.cmd != "inspect":
            recipe = _recipe(a)  # validate before the slow model load
            if a.runs < 7:
                raise CompressError("--runs must be at least 7")
        bundle = load_model(a.model)
        if a.cmd == "inspect":
            print(_inspect(bundle))
            return 0
        print(f"compressing {a.model}: {recipe.describe()}", file=sys.stderr)
        if a.cmd == "apply":
            comp = pipeline.compress(bundle, recipe)
            out = pipeline.report(bundle, comp, a.batch, a.seq, a.runs)
        else:
            out, comp = _heal(bundle, recipe, a)
        if a.out:
            out["saved_to"] = str(pipeline.save_compressed(comp, a.out))
        print(json.dumps(out, indent=1))
        return 0
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _heal(bundle, recipe, a):
    """(report of the healed model + "unhealed" numbers, healed bundle)."""
    from . import evaluate, pipeline
    texts = None
    if a.text:
        try:
            texts = [t.strip() for t in open(a.text, encoding="utf-8").read().splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise CompressError(f"cannot read --text {a.text}: {e}") from None
    unhealed = pipeline.compress(bundle, dataclasses.replace(recipe, heal_steps=0, runtime="eager"))

    def progress(p):
        print(f"heal step {p['step']}/{p['steps']} loss {p['loss']:.4f} dev {p.get('dev')} "
              f"({p.get('seconds_left', 0):.0f} s left)", file=sys.stderr)
    healed = pipeline.compress(bundle, recipe, texts=texts, minutes=a.minutes, progress=progress)
    out = pipeline.report(bundle, healed, a.batch, a.seq, a.runs)
    out["unhealed"] = {**pipeline.numbers(unhealed), "quality": evaluate.quality(unhealed, bundle)}
    return out, healed


def _inspect(bundle) -> str:
    import pandas as pd
    from .measure import count_params, size_breakdown, size_bytes
    from .spectrum import spectra
    rows = []
    for name, s in spectra(bundle).items():
        k = len(s.s)
        rows.append({"layer": name, "out x in": f"{s.m}x{s.n}", "s_max": s.s[0], "s_min": s.s[-1],
                     "energy@25%": s.energy[max(0, k // 4 - 1)], "energy@50%": s.energy[k // 2 - 1],
                     "rank@90%E": int((s.energy < 0.9).sum() + 1), "max useful rank": s.max_useful_rank})
    info = ", ".join(f"{k}={v}" for k, v in bundle.info.items())
    sizes = size_breakdown(bundle.model, bundle.adapter)
    return (f"{bundle.name}: {info}\nparams {count_params(bundle.model):,}  size {size_bytes(bundle.model):,} bytes "
            f"({', '.join(f'{k} {v:,}' for k, v in sizes.items())})\n\n"
            + pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    sys.exit(main())

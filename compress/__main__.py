"""CLI: python -m compress inspect|apply. apply prints ONE JSON object on stdout; logs go to stderr."""
import argparse
import json
import sys

from .recipe import QUANT_MODES, RANK_MODES, CompressError, Recipe


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _recipe_args(p):
    p.add_argument("--recipe", help="recipe.json; the flags below override its fields")
    p.add_argument("--rank-mode", choices=RANK_MODES)
    p.add_argument("--rank", type=float, help="ratio: of min(m, n); energy: of sum(S^2); budget: of dense params")
    p.add_argument("--quant", choices=QUANT_MODES)
    p.add_argument("--no-quant-embeddings", action="store_true", help="with int8: keep the word embeddings fp32")


def _recipe(a) -> Recipe:
    base = Recipe()
    if a.recipe:
        try:
            base = Recipe.from_json(open(a.recipe).read())
        except OSError as e:
            raise CompressError(f"cannot read recipe {a.recipe}: {e.strerror}") from None
    over = {"rank_mode": a.rank_mode, "rank": a.rank, "quant": a.quant,
            "quant_embeddings": False if a.no_quant_embeddings else None}
    return Recipe.from_dict({**base.to_dict(), **{k: v for k, v in over.items() if v is not None}})


def main(argv=None) -> int:
    p = _Parser(prog="python -m compress", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    ins = sub.add_parser("inspect", help="layers, spectra summary and size breakdown of a model")
    ins.add_argument("--model", default="minilm")
    app = sub.add_parser("apply", help="compress, measure, print one JSON object")
    app.add_argument("--model", default="minilm")
    _recipe_args(app)
    app.add_argument("--batch", type=int, default=8)
    app.add_argument("--seq", type=int, default=128)
    app.add_argument("--runs", type=int, default=7, help="timed runs per model (>= 7)")
    app.add_argument("--out", help="save the compressed model here (reload with compress.load_compressed)")
    a = p.parse_args(argv)
    try:
        from . import pipeline
        from .models import load_model
        if a.cmd == "apply":
            recipe = _recipe(a)  # validate before the slow model load
            if a.runs < 7:
                raise CompressError("--runs must be at least 7")
        bundle = load_model(a.model)
        if a.cmd == "inspect":
            print(_inspect(bundle))
            return 0
        print(f"compressing {a.model}: {recipe.describe()}", file=sys.stderr)
        comp = pipeline.compress(bundle, recipe)
        out = pipeline.report(bundle, comp, a.batch, a.seq, a.runs)
        if a.out:
            out["saved_to"] = str(pipeline.save_compressed(comp, a.out))
        print(json.dumps(out, indent=1))
        return 0
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


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

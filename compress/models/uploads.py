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
from .tokcheck import check_files as check_tokenizer_files
from .pooling import read as read_pooling
from .bundle import ModelBundle, file_sha256, hf_info
from ..serve.cache import LRU
from ..serve.cancel import checkpoint
from ..errors import CompressError
from .staging import (MAX_CONFIG_BYTES, MAX_UPLOAD_BYTES, check_index, copy_entry, extract, listing,  # noqa: F401
                      one_line, open_zip, quiet, refuse_lone_file, select, st_header, upload_path)

MAX_PARAMS = 200_000_000        # declared by the config or the weights, checked before any allocation
MAX_LAYERS, MAX_HEADS = 96, 128  # checked on the raw config, before transformers builds anything

FAMILIES = tuple(k for k, a in ADAPTERS.items() if a.uploadable)  # model_type values an upload may declare
# every family's spelling of the block and head counts, whichever family a config declares (transformers maps
# another family's name onto its own: GPT2Config takes num_hidden_layers as n_layer)
_COUNTS = {**{a.layers_attr: MAX_LAYERS for a in ADAPTERS.values()},
           **{a.heads_attr: MAX_HEADS for a in ADAPTERS.values()},
           **{a.kv_heads_attr: MAX_HEADS for a in ADAPTERS.values() if a.kv_heads_attr},
           **{k: most for a in ADAPTERS.values() for k, most in a.extra_counts}}
NO_TOKENIZER = "no usable tokenizer: measured on seeded random token ids, so only indicative"

_CACHE = LRU("uploads", 2, "uploaded originals by content (weights + tokenizer files); uploads are big")
_LOCK = threading.Lock()  # one upload loads at a time: two 500 MB loads at once could exhaust memory


def load_upload(path) -> ModelBundle:
    """Load a zip or folder upload. Cached by content: the same bytes under another path load once."""
    p = upload_path(path)
    refuse_lone_file(p)
    with _LOCK:
        tmp = Path(tempfile.mkdtemp(prefix="compress-upload-"))
        try:
            cfg = _stage(p, tmp)  # only the files we use, flat in tmp; config validated before extraction
            weights = sorted(tmp.glob("*.safetensors"))
            content_hash = file_sha256(weights)
            key = content_hash + file_sha256(sorted(set(tmp.iterdir()) - set(weights)))
            b = _CACHE.get_or_make(key, lambda: _load_dir(tmp, cfg, str(p.resolve()), content_hash))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # weights and tokenizer are in memory by now
    name = str(p.resolve())  # base.json records it, so load_compressed finds the upload again
    return b if b.name == name else dataclasses.replace(b, name=name, info={**b.info, "source": name})


def local_root() -> Path | None:
    """The folder under which the app may load models from this machine's disk: COMPRESS_LOCAL_ROOT, set by the
    server's operator; None (the default) offers no local folders at all."""
    root = os.environ.get("COMPRESS_LOCAL_ROOT", "").strip()
    return Path(root).resolve() if root else None


def load_local(path) -> ModelBundle:
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
    return load_upload(p)


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
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
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
    adapter = ADAPTERS[mt]  # every embedding table (BERT: token types; rotary families have no position table)
    tables = vocab + (pos if adapter.position_embeddings else 0) + (getattr(cfg, "type_vocab_size", 0) or 0)
    if not isinstance(tables, int):
        raise CompressError("config.json: the embedding table sizes must be integers")
    params = tables * h + layers * adapter.block_params(cfg)  # embeddings + blocks, biases aside
    if params > MAX_PARAMS:
        raise CompressError(f"config.json declares about {params / 1e6:,.0f}M parameters; the limit is "
                            f"{MAX_PARAMS / 1e6:.0f}M (nothing was allocated)")
    return cfg


# ---------------------------------------------------------------- loading the vetted files

def _header(d: Path) -> dict[str, tuple]:
    """{tensor name: shape} from the safetensors headers (nothing loaded); truncated files are refused."""
    from safetensors import SafetensorError, safe_open
    shapes, params = {}, 0
    for f in sorted(d.glob("*.safetensors")):
        with open(f, "rb") as fh:
            st_header(fh, f.stat().st_size, name=f.name)  # sized and counted before safetensors parses it
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    s = st.get_slice(k)
                    shapes[k] = tuple(s.get_shape())
                    params += torch.Size(shapes[k]).numel() if s.get_dtype() in ("F32", "F16", "BF16", "F64") else 0
        except SafetensorError as e:
            raise CompressError(f"{f.name} is truncated or not a safetensors file ({e})") from None
    if params > MAX_PARAMS:
        raise CompressError(f"the weights hold {params / 1e6:,.0f}M parameters; the limit is {MAX_PARAMS / 1e6:.0f}M")
    return shapes


def _model_class(task: str):
    from transformers import AutoModel, AutoModelForCausalLM
    return AutoModelForCausalLM if task == "generation" else AutoModel


def _mismatch(what: str) -> CompressError:
    return CompressError(f"config.json does not match the weights: {what}")


def _check_shapes(cfg, task: str, shapes: dict) -> None:
    """Compare the shapes the config implies (model built on the meta device: no memory) to the header."""
    try:  # an unknown activation, a padding id outside the table...: the config, in one line
        with torch.device("meta"):
            meta = _model_class(task).from_config(cfg)
    except Exception as e:  # noqa: BLE001 - transformers' errors on untrusted configs vary
        raise CompressError(f"config.json does not describe a model that can be built: {one_line(e)}") from None
    params = sum(t.numel() for t in meta.state_dict().values())  # every table, counted on the meta model
    if params > MAX_PARAMS:
        raise CompressError(f"config.json describes {params / 1e6:,.0f}M parameters; the limit is "
                            f"{MAX_PARAMS / 1e6:.0f}M (nothing was allocated)")
    pre = meta.base_model_prefix + "."
    for k, v in meta.state_dict().items():
        base = k.removeprefix(pre)
        for cand in (k, base, pre + base):
            if cand in shapes and shapes[cand] != tuple(v.shape):
                raise _mismatch(f"{cand} is {list(shapes[cand])} in the weights, the config implies {list(v.shape)}")
    missing = [k for k, _ in meta.named_parameters()  # (tied tables once) a table the weights lack would be built
               if k.removeprefix(pre).split(".")[0] != "pooler" and not {k, k.removeprefix(pre), pre + k} & set(shapes)]
    if missing:  # ... and refused only after: say it before anything is allocated
        raise _mismatch(f"{len(missing)} tensors are missing from the weights (e.g. {missing[0]})")


def _check_loading(model, info: dict) -> None:
    """Missing block/embedding weights, or weights of layers the config lacks, mean a wrong config."""
    missing = sorted(k for k in info["missing_keys"] if not k.split(".")[0] == "pooler")  # pooler: unused here
    if missing:
        raise _mismatch(f"{len(missing)} tensors are missing from the weights (e.g. {missing[0]})")
    if info["mismatched_keys"]:
        raise _mismatch(f"shape mismatch in {sorted(info['mismatched_keys'])[0]}")
    ours = {n for n, _ in model.named_children()} | {n for n, _ in model.base_model.named_children()}
    pre = model.base_model_prefix + "."
    extra = sorted(k for k in info["unexpected_keys"]  # weights of our modules; buffers like position_ids are fine
                   if k.removeprefix(pre).split(".")[0] in ours and k.endswith((".weight", ".bias")))
    if extra:  # task heads (cls., score., ...) are fine to drop; extra layers are not
        raise _mismatch(f"{len(extra)} weights belong to no layer of the config (e.g. {extra[0]})")


def _check_finite(model) -> None:
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CompressError(f"the weights contain NaN or infinite values (first in {n}); "
                                "no quality number would mean anything, so the model is refused")


def _load_dir(d: Path, cfg, name: str, content_hash: str) -> ModelBundle:
    adapter = ADAPTERS[cfg.model_type]
    task = adapter.task
    _check_shapes(cfg, task, _header(d))
    try:
        with quiet():
            model, info = _model_class(task).from_pretrained(
                d, config=cfg, use_safetensors=True, trust_remote_code=False, dtype=torch.float32,
                output_loading_info=True)
    except Exception as e:  # any failure reading untrusted weights is the upload's fault: say it plainly
        raise CompressError(f"the weights could not be loaded: {one_line(e)}") from e
    checkpoint()  # a Cancel after the one long read: nothing more is checked or built
    _check_loading(model, info)
    _check_finite(model)
    adapter.prepare(model)  # GPT-2's Conv1D, ModernBERT's fused GeGLU: from here on what every technique expects
    tok, why = _tokenizer(d, cfg.vocab_size)
    info = hf_info(cfg, name)
    info["max_positions"] -= adapter.position_offset(cfg)
    info.update(**({} if tok else {"metric_note": NO_TOKENIZER}), tokenizer=tok is not None,
                params=sum(p.numel() for p in model.parameters()))
    if not adapter.causal:  # sentence-transformers' Pooling / Normalize settings, where the folder has them
        info.update(read_pooling(d, cfg.hidden_size))
        if info.get("pooling", "mean") != "mean":  # the metric's words (the Model page, the card) say how
            note = f"embeddings {info['pooling']}-pooled, as its 1_Pooling says, not mean-pooled"
            info["metric_note"] = "; ".join(filter(None, (info.get("metric_note"), note)))
    if why:
        info["note"] = why + "; quality is measured on seeded random token ids, so it is only indicative"
    return ModelBundle(model.eval(), name, adapter, tok, content_hash, info)


def _tokenizer(d: Path, vocab_size: int):
    """(tokenizer, None) or (None, why not). A broken tokenizer does not block the model."""
    if not any((d / f).exists() for f in ("tokenizer.json", "vocab.txt", "vocab.json")):
        return None, "the upload has no tokenizer files"
    from transformers import AutoTokenizer
    try:
        check_tokenizer_files(d)  # sized, counted and typed before any library parses them
    except CompressError as e:
        return None, str(e)
    try:
        with quiet():
            tok = AutoTokenizer.from_pretrained(d, trust_remote_code=False)
    except Exception as e:
        return None, f"its tokenizer could not be loaded ({one_line(e)})"
    if len(tok) > vocab_size:
        return None, f"its tokenizer has {len(tok)} tokens but the model only {vocab_size}"
    if tok.pad_token is None:  # GPT-2 has no pad token; padded positions are masked out anyway
        if tok.eos_token is None:
            return None, "its tokenizer has no padding or end-of-text token"
        tok.pad_token = tok.eos_token
    return tok, None

"""Download and upload of a compressed model: one zip (or folder) holding the weights as the compressed model runs
them (int8 and packed low-bit tensors as stored integers and scales, in safetensors; model.onnx instead when ONNX
Runtime runs it), recipe.json, card.json (the original's name, content hash and license; sizes, quality, latency,
machine, date, versions), the tokenizer's files and a README saying how to load it.

Loading replays the recipe's steps on the original (never healing: the file's weights replace what the steps built,
checked name by name and shape by shape), so the original is needed: a bundled model, or one passed in `originals`
(matched by content hash). Nothing is unpickled; the zip gets the same limits and refusals as any upload.
"""
import contextlib
import copy
import datetime
import io
import json
import platform
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from ..measure import core as measure, metrics
from . import cardcheck, onnxcheck, tensors
from ..table import pipeline
from ..models.bundle import ModelBundle
from ..errors import CompressError
from ..serve.cancel import checkpoint
from ..models.bundled import BUNDLED, load_model
from ..techniques import int4
from ..techniques.ortrun import OrtModel
from ..models.weights import check_runs
from ..table.recipe import Recipe
from .onnxcheck import ONNX
from .tensors import WEIGHTS
from ..models.staging import (MAX_CONFIG_BYTES, max_upload_bytes, copy_entry, listing, one_line, open_zip, refuse_lone_file,
                      upload_path)

FORMAT = "compress-model/1"
CARD, RECIPE = "card.json", "recipe.json"


# ---------------------------------------------------------------- save

def card(bundle: ModelBundle, measured: dict | None = None) -> dict:
    """card.json: what the compressed model is, where it came from, and what was measured (a pipeline.report()'s
    dict, or the app's numbers, of this model; None: sizes only, measured here)."""
    info, m = bundle.info, measured or {}
    nums = m["compressed"] if "size_bytes" in m.get("compressed", {}) else pipeline.numbers(bundle)
    original = {"name": bundle.name if bundle.name in BUNDLED else Path(bundle.name).name,
                "content_hash": bundle.content_hash, "architecture": info.get("architecture"),
                "source": info.get("source") if bundle.name in BUNDLED else "an upload",
                "weights": info.get("dtype", "float32"),  # as loaded: bf16/fp16 kept, or widened to float32
                **({"license": info["license"]} if info.get("license") else {})}
    import transformers
    return {"format": FORMAT, "original": original, "recipe": bundle.recipe.describe(),
            "runtime_applied": bundle.applied.get("runtime_applied", "eager"),
            **{k: bundle.applied[k] for k in ("runtime_setting", "runtime_reason", "kept_blocks") if k in bundle.applied},
            "size_bytes": nums["size_bytes"], "params": nums["params"],
            "original_size_bytes": (m.get("original") or {}).get("size_bytes"),
            "quality": (m.get("compressed") or {}).get("quality"), "quality_metric": metrics.quality_words(bundle),
            "latency_ms": {k: (m.get(k) or {}).get("latency_ms") for k in ("original", "compressed")},
            "workload": m.get("workload"), "heal": bundle.applied.get("heal"),
            **{x.name: {k: (m.get(k) or {}).get(x.name) for k in ("original", "compressed")}  # measured on their own
               for x in metrics.own("all") if x.name in (m.get("compressed") or {})},
            "machine": {**measure.cpu_info(), "gpu": measure.gpu_info(), "python": platform.python_version()},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}


def _readme(c: dict, onnx: bool, tokenizer: bool, positions: int = 256) -> str:
    name, mb = c["original"]["name"], c["size_bytes"] / 1e6
    text = (f"# {name}, compressed: {c['recipe']}\n\n{mb:.2f} MB ({c['params']:,} parameters), made by the "
            f"transformer compression explorer on {c['date'][:10]}. card.json holds its measurements, recipe.json its "
            f"recipe.\n\n## Load it with this library\n\n`compress` is the Python package of the explorer's repository "
            f"(its `compress/` folder; `make run` there installs it with the app). From that folder:\n\n"
            f"```python\nimport compress\nm = compress.load_compressed("
            f"'this.zip')  # the original ({name}, sha256 {c['original']['content_hash'][:12]}...) must be at hand:\n"
            f"# bundled, or passed: compress.load_compressed('this.zip', originals=[compress.load_model('path')])\n```\n")
    if onnx:
        text += ("\n## Run it without this library (ONNX Runtime)\n\n```python\nimport numpy as np, onnxruntime as ort\n"
                 "from tokenizers import Tokenizer\ntok = Tokenizer.from_file('tokenizer/tokenizer.json')\n"
                 f"tok.enable_padding(); tok.enable_truncation({min(256, positions)})\n"
                 "enc = tok.encode_batch(['A sentence to embed.', 'And another one.'])\n"
                 "ids = np.array([e.ids for e in enc]); mask = np.array([e.attention_mask for e in enc])\n"
                 "out = ort.InferenceSession('model.onnx').run(None, {'input_ids': ids, 'attention_mask': mask})[0]\n"
                 "emb = (out * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)  # mean over real tokens\n"
                 "print(emb / np.linalg.norm(emb, axis=1, keepdims=True))  # unit sentence embeddings\n```\n"
                 "\n`output` is the last hidden state (batch, tokens, hidden) for an encoder, the next-token logits "
                 "for a decoder.\n")
    if not tokenizer:
        text += "\nNo tokenizer files: this model's tokens are the UTF-8 bytes of the text (or it had none).\n"
    return text


def files(bundle: ModelBundle, measured: dict | None = None) -> dict[str, bytes]:
    """Every file of the download, name -> bytes."""
    if bundle.recipe is None:
        raise CompressError("only a compressed model can be saved")
    onnx = isinstance(bundle.model, OrtModel) and bundle.model.stored  # (int4: its weights; the session is rebuilt)
    out = {ONNX: bundle.model.onnx} if onnx else {}
    if not onnx:
        checkpoint()
        flat, meta = tensors.flat((bundle.sized_model if bundle.sized_model is not None else bundle.model).state_dict())
        out[WEIGHTS] = st_save(flat, metadata=meta)
    c = card(bundle, measured)
    out[RECIPE] = (bundle.recipe.to_json() + "\n").encode()
    out[CARD] = (json.dumps(c, indent=1) + "\n").encode()
    from transformers import PreTrainedTokenizerBase
    tok = bundle.tokenizer if isinstance(bundle.tokenizer, PreTrainedTokenizerBase) else None
    n = bundle.info.get("max_positions") or 256
    if tok is not None:
        if bundle.recipe.positions:  # (a cut position table, positions.py: the saved tokenizer cuts at n too)
            tok = copy.copy(tok)
            tok.model_max_length = n
        with tempfile.TemporaryDirectory() as d:
            tok.save_pretrained(d)
            out.update({f"tokenizer/{p.name}": p.read_bytes() for p in Path(d).iterdir() if p.is_file()})
    out["README.md"] = _readme(c, onnx, tok is not None, n).encode()
    return out


def save_compressed(bundle: ModelBundle, out, measured: dict | None = None) -> Path:
    """The download: a zip when out ends in .zip (or is a file object), else a folder of the same files."""
    got = files(bundle, measured)
    if not isinstance(out, (str, Path)):
        _write_zip(got, out)
        return out
    out = Path(out)
    try:
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "wb") as f:
                _write_zip(got, f)
            return out
        for name, data in got.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
    except OSError as e:  # (a folder that cannot be written: one line)
        raise CompressError(f"cannot write the compressed model to {str(out)[:200]}: {e.strerror or e}") from None
    return out


def zip_bytes(bundle: ModelBundle, measured: dict | None = None) -> bytes:
    buf = io.BytesIO()
    save_compressed(bundle, buf, measured)
    return buf.getvalue()


def _write_zip(got: dict, f) -> None:
    with zipfile.ZipFile(f, "w") as z:
        for name, data in got.items():  # weights do not deflate much; the text files do
            checkpoint()
            z.writestr(name, data, zipfile.ZIP_STORED if name in (WEIGHTS, ONNX) else zipfile.ZIP_DEFLATED)


# ---------------------------------------------------------------- load

def is_compressed(path) -> bool:
    """Is this zip or folder a compressed model of this library (card.json + recipe.json at its top)?"""
    try:
        p = upload_path(path)
        if p.is_dir():
            return (p / CARD).is_file() and (p / RECIPE).is_file()
        with open_zip(p) as zf:
            return {CARD, RECIPE} <= set(zf.namelist())
    except CompressError:
        return False


def _read_all(p: Path, names=(CARD, RECIPE), most: int | None = None) -> tuple[set, dict[str, bytes]]:
    """(the files present, the files `names` read) with an upload's limits: safe names, declared sizes, entry counts,
    small JSON; most: the largest size one of them may declare (the weights: what the replayed recipe's model holds),
    checked before a byte of it is read."""
    refuse_lone_file(p)
    with contextlib.ExitStack() as stack:
        zf = None if p.is_dir() else stack.enter_context(open_zip(p))
        files = listing(p, zf)
        if sum(files[n] for n in (CARD, RECIPE, WEIGHTS, ONNX) if n in files) > max_upload_bytes():
            raise CompressError(f"the compressed model's files declare more than {max_upload_bytes() // 2**20:,} MB")
        for n in (CARD, RECIPE):
            if n not in files:
                raise CompressError(f"{p.name} is not a compressed model of this app: it has no {n}")
            if files[n] > MAX_CONFIG_BYTES:
                raise CompressError(f"{n} is {files[n]:,} bytes; a real one is a few KB")
        out = {}
        for n in (n for n in names if n in files):
            if most is not None and files[n] > most:
                raise CompressError(f"{n} declares {files[n]:,} bytes where this recipe's model holds at most "
                                    f"{most:,}: not this recipe's weights (nothing of it was read)")
            if zf is None:
                out[n] = (p / n).read_bytes()
            else:
                copy_entry(zf, zf.getinfo(n), buf := io.BytesIO())
                out[n] = buf.getvalue()
    return set(files), out


def _most_bytes(model) -> int:
    """What a weights file of this model may hold: 4 times its size (an older int4 zip kept its 8-bit tables in
    float), plus room for the header."""
    return 4 * measure.size_bytes(model) + 2**20


def _most_onnx(model) -> int:
    """What a model.onnx of a recipe on this original may hold before its replay says exactly (_onnx): the original's
    size and a tenth (an export of the uncompressed recipe, its vocabulary index), plus room for the graph."""
    return measure.size_bytes(model) * 11 // 10 + 4 * 2**20


def _original(c: dict, originals) -> ModelBundle:
    """The original a card names: a bundled model by name, else one of `originals` by content hash."""
    o = c.get("original") if isinstance(c, dict) else None
    if not isinstance(o, dict) or not isinstance(o.get("content_hash"), str) or not isinstance(o.get("name"), str):
        raise CompressError(f"{CARD} does not name its original model (name and content hash)")
    name, sha = o["name"][:100], o["content_hash"][:64]
    if isinstance(originals, (str, ModelBundle)) or not all(isinstance(b, ModelBundle) for b in originals or ()):
        raise CompressError("originals are loaded models (a list of load_model's or load_upload's), not names")
    for b in originals or ():
        if b.content_hash == sha:
            return b
    if name in BUNDLED:
        b = load_model(name)
        if b.content_hash == sha:
            return b
        raise CompressError(f"this was compressed from a {name} with other weights (content hash {sha[:12]}..., "
                            f"the bundled one is {b.content_hash[:12]}...); it cannot be rebuilt on this one")
    raise CompressError(f"this was compressed from {name!r} (content hash {sha[:12]}...): load that original model "
                        "first (upload it), then load this file again")


def load_compressed(path, originals=()) -> ModelBundle:
    """A compressed model from its zip or folder (save_compressed's), rebuilt on its original: bundled, or one of
    `originals` (ModelBundles, e.g. the uploads loaded in a session) with the content hash the card names. The
    bundle's info["card"] is the card it came with."""
    p = upload_path(path, "a saved compressed model")
    present, got = _read_all(p)
    try:  # (ValueError: JSON's, and a 4,301-digit integer Python's int() refuses)
        c = json.loads(got[CARD].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CompressError(f"{CARD} is not valid JSON: {one_line(e)}") from None
    try:
        recipe = Recipe.from_json(got[RECIPE].decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CompressError(f"{RECIPE} is not valid JSON: {one_line(e)}") from None
    if not isinstance(c, dict) or c.get("format") != FORMAT:
        raise CompressError(f"{CARD} is not of this app's format ({FORMAT})")
    c = cardcheck.checked(c)  # the uploader's claims: what the app reads of them, bounded (cardcheck.py)
    if recipe.heal_steps and not isinstance(c.get("heal"), dict):  # (the replay never heals: the label would lie)
        raise CompressError(f"{RECIPE} says healed {recipe.heal_steps} steps but {CARD} records no healing: the two "
                            "files disagree; refused")
    base = _original(c, originals)
    onnx = recipe.runtime == "onnxruntime" and ONNX in present
    raw = _read_all(p, (ONNX,), _most_onnx(base.model))[1][ONNX] if onnx else None
    if onnx:  # a model.onnx that is not ONNX is refused before the replay's work (a recipe's clustering: seconds)
        onnxcheck.readable(raw)
    if not onnx and WEIGHTS not in present:
        raise CompressError(f"{p.name} holds neither {WEIGHTS} nor {ONNX}: no weights")
    def load(ctx):  # the upload's weights; ONNX Runtime is then built from them, never from the replay's own floats
        tensors.load_state(ctx.model, _read_all(p, (WEIGHTS,), _most_bytes(ctx.model))[1][WEIGHTS],
                           fit=int4.saved_float)
        ctx.unquantized = None
    ctx = pipeline.walk(base, recipe, load=(lambda ctx: None) if onnx else load)  # (a replay: healing never runs)
    if onnx:  # our export of the replay, with the upload's weights
        ctx.model = onnxcheck.rebuilt(raw, ctx)
    for k in ("heal",):
        if isinstance(c.get(k), dict):
            ctx.applied[k] = c[k]
    out = pipeline.finish(ctx)
    out.info = {**out.info, "card": c}
    if not onnx:  # (an ONNX model was compared with the replay's outputs already)
        check_runs(out, "the compressed model")
    return out


"""An upload's weights checked against its config before and after loading: the safetensors headers read (shapes,
parameters, stored dtype; nothing loaded), the shapes the config implies (a model built on the meta device), the memory
a load needs (membound, before anything is allocated), and after the load what is missing, extra or not finite."""
from pathlib import Path

import torch

from ..errors import CompressError
from .limits import PARAMS_VAR, max_params, params_words
from .staging import one_line, st_header

FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
DTYPES = ("float32", "keep")  # bf16/fp16 weights widened to float32 (the default), or kept as stored


def too_many(params: int, what: str) -> None:
    if params > (most := max_params()):
        raise CompressError(f"{what} {params_words(params)} parameters; the limit is {params_words(most)} "
                            f"({PARAMS_VAR}; nothing was allocated)")


def header(d: Path) -> tuple[dict[str, tuple], torch.dtype, dict[str, str]]:
    """({tensor name: shape}, the dtype most of the float parameters are stored in, {name: dtype} of the tensors
    stored in another type) from the safetensors headers (nothing loaded); truncated files are refused."""
    from safetensors import SafetensorError, safe_open
    shapes, params, by_dtype, other = {}, 0, {}, {}
    for f in sorted(d.glob("*.safetensors")):
        with open(f, "rb") as fh:
            st_header(fh, f.stat().st_size, name=f.name)  # sized and counted before safetensors parses it
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    s = st.get_slice(k)
                    shapes[k] = tuple(s.get_shape())
                    if s.get_dtype() in FLOATS:
                        n = torch.Size(shapes[k]).numel()
                        params += n
                        by_dtype[s.get_dtype()] = by_dtype.get(s.get_dtype(), 0) + n
                    else:
                        other[k] = str(s.get_dtype())[:20]
        except SafetensorError as e:
            raise CompressError(f"{f.name} is truncated or not a safetensors file ({e})") from None
    too_many(params, "the weights hold")
    return shapes, FLOATS[max(by_dtype, key=by_dtype.get)] if by_dtype else torch.float32, other


def model_class(task: str):
    from transformers import AutoModel, AutoModelForCausalLM
    return AutoModelForCausalLM if task == "generation" else AutoModel


def _mismatch(what: str) -> CompressError:
    return CompressError(f"config.json does not match the weights: {what}")


def check_shapes(cfg, task: str, shapes: dict, other: dict | None = None) -> int:
    """Compare the shapes the config implies (model built on the meta device: no memory) to the header, and each
    parameter stored as a float (other: {name: dtype} of those that are not: an I64 table of 10^15 loaded as float
    weights, an all-integer file raised a KeyError); returns the parameters the model will have."""
    try:  # an unknown activation, a padding id outside the table...: the config, in one line
        with torch.device("meta"):
            meta = model_class(task).from_config(cfg)
    except Exception as e:  # noqa: BLE001 - transformers' errors on untrusted configs vary
        raise CompressError(f"config.json does not describe a model that can be built: {one_line(e)}") from None
    params = sum(t.numel() for t in meta.parameters())  # every table, counted on the meta model (a tied one once)
    too_many(params, "config.json describes")
    pre = meta.base_model_prefix + "."
    for k, v in meta.state_dict().items():
        base = k.removeprefix(pre)
        for cand in (k, base, pre + base):
            if cand in shapes and shapes[cand] != tuple(v.shape):
                raise _mismatch(f"{cand} is {list(shapes[cand])} in the weights, the config implies {list(v.shape)}")
    for k, _ in meta.named_parameters():
        stored = next(((c, other[c]) for c in (k, k.removeprefix(pre), pre + k) if c in (other or {})), None)
        if stored:
            raise CompressError(f"the weights store {stored[0]} as {stored[1]}: a model's weights are floats "
                                "(F32, F16, BF16 or F64)")
    missing = [k for k, _ in meta.named_parameters()  # (tied tables once) a table the weights lack would be built
               if k.removeprefix(pre).split(".")[0] != "pooler" and not {k, k.removeprefix(pre), pre + k} & set(shapes)]
    if missing:  # ... and refused only after: say it before anything is allocated
        raise _mismatch(f"{len(missing)} tensors are missing from the weights (e.g. {missing[0]})")
    return params


def check_loading(model, info: dict) -> None:
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


def check_finite(model) -> None:
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CompressError(f"the weights contain NaN or infinite values (first in {n}); "
                                "no quality number would mean anything, so the model is refused")


def check_runs(b, what: str) -> None:
    """One forward of a short text (2 x 16 ids spread over the vocabulary) must run and give finite outputs: values
    finite one by one can still give NaN or fail in a kernel (an uploaded config's tiny eps, a zip's 3e38 norm weight
    or int8 scale); refused at load, in one line, rather than met later as NaN metrics or an error inside a page."""
    from .adapters import forward
    v, n = max(1, int(b.info.get("vocab_size") or 256)), max(1, min(16, int(b.info.get("max_positions") or 16)))
    ids = (torch.arange(2 * n) * 7919 % v).view(2, n)
    try:
        with torch.no_grad():
            out = forward(b.model, b.adapter, ids, torch.ones_like(ids))
    except CompressError:
        raise
    except Exception as e:  # noqa: BLE001 - the upload's numbers in our model: its fault
        raise CompressError(f"{what} fails on its first forward ({type(e).__name__}: {one_line(e, 200)}); "
                            "refused") from None
    if not torch.isfinite(out).all():
        raise CompressError(f"{what} gives NaN or infinite outputs on a short text; refused")

"""A compressed model's state as plain tensors and back: quantized tensors as their integers, scales and zero points,
packed (weight, bias) tuples and dtypes flattened, tied tensors once (safetensors stores tensors, never objects), and
the file's tensors checked name by name and shape by shape against the model a recipe builds before loading."""
import io

import torch
from safetensors.torch import load as st_load

from ..errors import CompressError
from ..models.staging import one_line, st_header

WEIGHTS = "weights.safetensors"
_NONE = "None"


def flat(sd: dict) -> tuple[dict, dict]:
    """A state dict (quantized tensors, packed (weight, bias) tuples, dtypes) -> plain tensors + string metadata.
    A quantized tensor becomes its integers, scales and zero points; a tensor seen twice (tied) is stored once."""
    out, meta, seen = {}, {}, {}
    for k, v in sd.items():
        items = {f"{k}.{i}": x for i, x in enumerate(v)} if isinstance(v, tuple) else {k: v}
        for key, t in items.items():
            if isinstance(t, torch.dtype):
                meta[key] = str(t)
            elif t is None:
                meta[key] = _NONE
            elif not t.is_quantized and t.data_ptr() in seen and seen[t.data_ptr()][1] == (t.shape, t.dtype):
                meta[key] = "same:" + seen[t.data_ptr()][0]
            elif t.is_quantized:
                out[key + ".int"] = t.int_repr().contiguous()
                if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    out[key + ".scale"] = torch.tensor([t.q_scale()], dtype=torch.float64)
                    out[key + ".zero_point"] = torch.tensor([t.q_zero_point()])
                else:
                    out[key + ".scales"] = t.q_per_channel_scales().contiguous()
                    out[key + ".zero_points"] = t.q_per_channel_zero_points().contiguous()
                    meta[key + ".axis"] = str(t.q_per_channel_axis())
            else:
                seen.setdefault(t.data_ptr(), (key, (t.shape, t.dtype)))
                out[key] = t.detach().contiguous().clone()
    return out, meta


def _take(flat: dict, used: set, key: str):
    if key not in flat:
        raise CompressError(f"the weights file lacks {key!r}, which the recipe's model has: not this recipe's weights")
    used.add(key)
    return flat[key]


def _rebuild(key: str, want, flat: dict, meta: dict, used: set):
    """One state-dict value of the model the recipe built (want), from the file's tensors: same kind and shape."""
    if isinstance(want, torch.dtype):
        if key not in meta:
            _take({}, used, key)  # says what is missing
        if meta[key] != str(want):
            raise CompressError(f"the weights file stores {key} as {meta.get(key)}, the recipe's model as {want}")
        return want
    if isinstance(want, tuple):
        return tuple(_rebuild(f"{key}.{i}", w, flat, meta, used) for i, w in enumerate(want))
    if want is None:
        return None
    if meta.get(key, "").startswith("same:"):
        key = meta[key][5:]
    if want.is_quantized:
        ints = _take(flat, used, key + ".int")
        if ints.dtype != want.int_repr().dtype or ints.shape != want.shape:
            raise CompressError(f"weights of other shapes: {key} is {tuple(ints.shape)} {ints.dtype} in the file, "
                                f"{tuple(want.shape)} in the model its recipe builds")
        per_tensor = want.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)
        names = (".scale", ".zero_point") if per_tensor else (".scales", ".zero_points")
        scales, zeros = (_take(flat, used, key + n) for n in names)
        kinds = (torch.float64, torch.int64) if per_tensor else \
            (want.q_per_channel_scales().dtype, want.q_per_channel_zero_points().dtype)
        if (scales.dtype, zeros.dtype) != kinds:  # (a uint64 zero point's range check raised NotImplementedError)
            raise CompressError(f"the weights file stores {key}'s scales and zero points as {scales.dtype} and "
                                f"{zeros.dtype}; its model has {kinds[0]} and {kinds[1]}")
        _check_qparams(key, scales, zeros, ints.dtype, 1 if per_tensor else want.shape[want.q_per_channel_axis()])
        try:
            if per_tensor:
                return torch._make_per_tensor_quantized_tensor(ints, float(scales[0]), int(zeros[0]))
            return torch._make_per_channel_quantized_tensor(ints, scales, zeros, want.q_per_channel_axis())
        except (RuntimeError, ValueError, IndexError) as e:
            raise CompressError(f"the weights file's {key} cannot be rebuilt: {one_line(e)}") from None
    t = _take(flat, used, key)
    if t.shape != want.shape or t.dtype != want.dtype:
        raise CompressError(f"weights of other shapes: {key} is {tuple(t.shape)} {t.dtype} in the file, "
                            f"{tuple(want.shape)} {want.dtype} in the model its recipe builds")
    _check_values(key, t, want)
    return torch.nn.Parameter(t, want.requires_grad) if isinstance(want, torch.nn.Parameter) else t  # (size: exact)


def _check_qparams(key: str, scales, zeros, int_dtype, n: int) -> None:
    """A quantized tensor's scales finite and > 0, its zero points within its integer type (finite where they are
    floats: the word table's per-row qparams), one per channel."""
    info = torch.iinfo(int_dtype)
    if scales.numel() != n or zeros.numel() != n:
        raise CompressError(f"the weights file's {key} has {scales.numel()} scales and {zeros.numel()} zero points "
                            f"for {n} channel(s)")
    if not (torch.isfinite(scales).all() and (scales > 0).all()):
        raise CompressError(f"the weights file's {key} has a scale that is zero, negative, NaN or infinite")
    if zeros.is_floating_point() and not torch.isfinite(zeros).all():
        raise CompressError(f"the weights file's {key} has a zero point that is NaN or infinite")
    if not zeros.is_floating_point() and not ((zeros >= info.min) & (zeros <= info.max)).all():
        raise CompressError(f"the weights file's {key} has a zero point outside {info.min}..{info.max}")


def _check_values(key: str, t: torch.Tensor, want: torch.Tensor) -> None:
    """Values the model can run: floats finite (scales > 0), indices within the range of the recipe's model's own
    (a pruned vocabulary's index reads rows 0..n-1 of its table). Packed bytes and int8 codebooks take any value."""
    if t.is_floating_point():
        if not torch.isfinite(t).all():
            raise CompressError(f"the weights file's {key} holds NaN or infinite values")
        if key.endswith(".scale") and not (t > 0).all():
            raise CompressError(f"the weights file's {key} has a scale that is zero or negative")
    elif t.dtype not in (torch.uint8, torch.int8, torch.bool) and t.numel() and want.numel():
        lo, hi = int(want.min()), int(want.max())
        if int(t.min()) < lo or int(t.max()) > hi:
            raise CompressError(f"the weights file's {key} holds indices outside {lo}..{hi}, the range its model reads")


def _leaves(sd: dict) -> int:
    return sum(len(v) if isinstance(v, tuple) else 1 for v in sd.values())


def load_state(model: torch.nn.Module, raw: bytes, fit=None) -> None:
    """The file's weights into the model the recipe built; every tensor must be used and match. fit(model, head),
    given the file's header first (each tensor's name: its dtype and shape), may shape the model as an older version
    of a step saved it."""
    most = 3 * _leaves(model.state_dict()) + 8  # (a quantized tensor is three: its integers, scales and zero points)
    with io.BytesIO(raw) as f:  # the metadata (dtypes, axes, tied names) from the header, sized and counted first
        head = st_header(f, len(raw), most, 4096 + 512 * most, WEIGHTS)
    meta = head.get("__metadata__") or {}
    if fit:
        fit(model, {k: v for k, v in head.items() if k != "__metadata__" and isinstance(v, dict)})
    want = model.state_dict()
    try:
        flat = st_load(raw)
    except Exception as e:  # noqa: BLE001 - an untrusted file: any failure to parse it is the file's fault
        raise CompressError(f"{WEIGHTS} is not a readable safetensors file: {one_line(e)}") from None
    if not all(isinstance(v, str) for v in meta.values()):
        raise CompressError(f"{WEIGHTS}'s metadata is not text")
    used: set = set()
    state = type(want)((k, _rebuild(k, v, flat, meta, used)) for k, v in want.items())
    state._metadata = want._metadata  # the modules' versions: quantized Linears read their packed weights by it
    if extra := sorted(set(flat) - used):
        raise CompressError(f"the weights file holds {len(extra)} tensor(s) the recipe's model does not have "
                            f"(e.g. {extra[0][:80]!r}): not this recipe's weights")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - shapes were checked; whatever else fails is the file's
        raise CompressError(f"the weights do not fit the recipe's model: {one_line(e)}") from None

"""Raw values of an uploaded config.json that transformers lets through and that would fail later, or run code: a
request for the model's own code, grouped-query attention whose groups do not divide, a head_dim the hidden size does
not give, a rotary scaling transformers has no function for (it warns and builds; the first forward raises). Each is
refused in one line before transformers builds anything."""
import math

from ..errors import CompressError

REMOTE_CODE = ("auto_map", "trust_remote_code", "custom_pipelines")
POSITIVE = {"layer_norm_eps", "rms_norm_eps", "norm_eps", "layer_norm_epsilon", "rope_theta", "factor",
            "global_rope_theta", "local_rope_theta"}  # divide (eps), scale (rotary) or set a base: never <= 0


def _positive(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def check_numbers(d: dict) -> None:
    """Every number of the config finite and at most 2**53 (a 400-digit hidden size raised OverflowError where it was
    compared as a float), and the settings that divide or scale positive (a NaN rms_norm_eps built a model whose every
    output was NaN; a rotary factor of Infinity too)."""
    stack = [("config.json", d)]
    while stack:  # (iterative: json.loads already bounded the depth, a recursion here would need its own bound)
        where, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((str(k)[:40], x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((where, x) for x in v)
        elif isinstance(v, float) and not math.isfinite(v) or isinstance(v, int) and abs(v) > 2**53:
            raise CompressError(f"config.json: {where} = {str(v)[:40]} is not a finite number of sensible size")
        elif where in POSITIVE and not isinstance(v, bool) and isinstance(v, (int, float)) and v <= 0:
            raise CompressError(f"config.json: {where} = {v} must be positive")


def check_raw(d: dict, adapter) -> None:
    """Refuse what no built-in family of `adapter` can run (module docstring); d: the parsed config.json."""
    check_numbers(d)
    for k in REMOTE_CODE:
        if k in d:
            raise CompressError(f"config.json names {k!r}: the model asks to run its own code, which never runs here "
                                "(only transformers' built-in families load)")
    heads, hidden = d.get(adapter.heads_attr), d.get("hidden_size")
    kv = d.get(adapter.kv_heads_attr) if adapter.kv_heads_attr else None
    if kv is not None:
        if not _positive(kv):
            raise CompressError(f"config.json: {adapter.kv_heads_attr} must be a positive integer, got {str(kv)[:40]}")
        if _positive(heads) and heads % kv:
            raise CompressError(f"config.json: {heads} attention heads cannot share {kv} key/value heads in equal "
                                f"groups ({adapter.heads_attr} must be a multiple of {adapter.kv_heads_attr})")
    hd = d.get("head_dim")
    if hd is not None and _positive(heads) and _positive(hidden) and (hidden % heads or hd != hidden // heads):
        raise CompressError(f"config.json: head_dim = {str(hd)[:40]} but hidden_size / heads = {hidden} / {heads}; "
                            "only models whose heads split the hidden size evenly are supported")
    for rope in _ropes(d):
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in known_rope_types():
            raise CompressError(f"config.json: rotary scaling type {str(kind)[:40]!r} is unknown; known: "
                                f"{', '.join(known_rope_types())}")


def _ropes(d: dict) -> list[dict]:
    """The rotary settings a config holds (rope_scaling, or transformers 5's rope_parameters, flat or per layer kind)."""
    out = []
    for k in ("rope_scaling", "rope_parameters"):
        v = d.get(k)
        if v is None:
            continue
        if not isinstance(v, dict):
            raise CompressError(f"config.json: {k} must be an object, got {str(v)[:40]}")
        nested = v and all(isinstance(x, dict) for x in v.values())
        out += list(v.values()) if nested else [v]
    return out


def known_rope_types() -> tuple:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    return ("default", *ROPE_INIT_FUNCTIONS)

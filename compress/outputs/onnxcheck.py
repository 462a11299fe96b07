"""An uploaded model.onnx is never run. An ONNX graph is code: external data can name any file on this machine (in
initializers, Constant attributes, subgraphs, functions), a Loop can spin forever, a ConstantOfShape allocates what it
asks. So the upload is only parsed (bounded by the size of our own export of the same recipe; in a job, in a child
process of one job's memory: protobuf takes up to 100x a crafted file's bytes), its graph must equal
ours node for node, and only its weights (initializers of the same names, shapes and types, embedded and finite) go
into our graph: what runs is our own export with the upload's numbers (a healed zip keeps its healed weights).
"""
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CompressError
from ..serve import sandbox

ONNX = "model.onnx"
SLACK = 1 << 16  # bytes an upload may exceed our export by (protobuf's varints, doc strings): never a second graph


def _refuse(why: str) -> CompressError:
    return CompressError(f"{ONNX} {why}: it is not the graph this app exports for its recipe; refused")


def parse(raw: bytes, ours: bytes | None):
    """The upload's ModelProto, parsed only if it is no larger than our export (plus SLACK; ours None: its reader
    bounded it); external data is never loaded (parsing from bytes reads no file)."""
    import onnx
    if ours is not None and len(raw) > len(ours) + len(ours) // 50 + SLACK:
        raise _refuse(f"is {len(raw):,} bytes where this recipe's export is {len(ours):,}")
    try:
        return onnx.load_model_from_string(raw)
    except Exception:  # noqa: BLE001 - an untrusted file: any parse failure is the file's fault; its text says nothing
        raise CompressError(f"{ONNX} is not a readable ONNX model") from None


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.SerializeToString(deterministic=True) == y.SerializeToString(deterministic=True)
                                    for x, y in zip(a, b))


SCALES = {"DequantizeLinear": (1,), "QuantizeLinear": (1,), "MatMulNBits": (2,), "QLinearMatMul": (1, 4, 6)}


def _scales(graph) -> set[str]:
    """Our graph's initializers that are quantization scales: a node's scale input (SCALES), or named so (ONNX
    Runtime's own, multiplied after MatMulInteger): a zero makes a weight read as nothing, a negative flips it."""
    inits = {t.name for t in graph.initializer}
    return {x for n in graph.node for i, x in enumerate(n.input) if i in SCALES.get(n.op_type, ()) and x in inits} | \
        {x for x in inits if x.lower().endswith(("scale", "scales"))}


def _weights(t, want, scale: bool = False):
    """One initializer of the upload (merge() refused external data): our shape and type, bytes fitting, finite,
    above zero if it is a scale, integers (a pruned vocabulary's index) within ours' range (as the weights file's
    are: an index past its table passed the load, then every Apply failed in ONNX Runtime's Gather); rebuilt from
    its values (a tensor's raw bytes and a float list beside them, its doc string: not carried into our graph)."""
    from onnx import numpy_helper
    if list(t.dims) != list(want.dims) or t.data_type != want.data_type:
        raise _refuse(f"stores {t.name[:80]!r} as {list(t.dims)} of type {t.data_type}, ours {list(want.dims)} of "
                      f"type {want.data_type}")
    try:
        arr = numpy_helper.to_array(t)  # checks the bytes against the shape
    except Exception:  # noqa: BLE001
        raise _refuse(f"holds a tensor {t.name[:80]!r} whose bytes do not fit its shape") from None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise CompressError(f"{ONNX} holds NaN or infinite values in {t.name[:80]!r}; refused")
    if scale and not (arr > 0).all():
        raise CompressError(f"{ONNX}'s {t.name[:80]!r} has a scale that is zero or negative; refused")
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > 1 and arr.size:  # (8-bit codes and weights take any value)
        ours = numpy_helper.to_array(want)
        if ours.size and (arr.min() < ours.min() or arr.max() > ours.max()):
            raise CompressError(f"{ONNX}'s {t.name[:80]!r} holds indices outside {ours.min()}..{ours.max()}, the "
                                "range its model reads; refused")
    return _as_ours(arr, want)


def _as_ours(arr: np.ndarray, want):
    """Our initializer with the upload's values, stored as ours stores them (raw bytes, or a typed list), so the
    graph is byte for byte our export's but for the numbers."""
    import onnx
    from onnx import helper
    if not want.HasField("raw_data"):
        return helper.make_tensor(want.name, want.data_type, list(want.dims), arr.flatten().tolist())
    out = onnx.TensorProto()
    out.CopyFrom(want)
    out.raw_data = np.ascontiguousarray(arr).tobytes()
    return out


def merge(raw: bytes, ours: bytes) -> bytes:
    """Our graph (ours: the export of the replayed recipe) with the upload's weights; refused in one line unless the
    upload's graph (nodes, inputs, outputs, opsets, functions) is ours exactly and its initializers match ours."""
    import onnx
    up, mine = parse(raw, ours), onnx.load_model_from_string(ours)
    g, h = up.graph, mine.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) or t.HasField("segment")
           for t in g.initializer):
        raise CompressError(f"{ONNX} points to external data files, which are never read here; refused")
    if len(up.functions) or len(g.sparse_initializer) or not _same(up.opset_import, mine.opset_import):
        raise _refuse("holds functions, sparse tensors or other opsets")
    if not (_same(g.input, h.input) and _same(g.output, h.output)):
        raise _refuse("takes other inputs or gives other outputs")
    if not _same(g.node, h.node):
        raise _refuse(f"has {len(g.node):,} nodes that differ from our {len(h.node):,}")
    theirs = {t.name: t for t in g.initializer}
    if len(theirs) != len(g.initializer) or set(theirs) != {t.name for t in h.initializer}:
        raise _refuse("holds other weights (initializer names)")
    scales = _scales(h)
    new = [_weights(theirs[t.name], t, t.name in scales) for t in h.initializer]
    del h.initializer[:]
    h.initializer.extend(new)
    return mine.SerializeToString()


def _in_child(raw: bytes, ours: bytes | None, path: Path | None) -> None:  # in a job: a child of bounded memory
    if path is None:  # (parsing a crafted protobuf took up to 100x its bytes: 2 GB for a zip of 17 KB)
        parse(raw, None)
    else:
        path.write_bytes(merge(raw, ours))


def readable(raw: bytes) -> None:
    """The upload parses as ONNX (checked before the replay's work: a recipe's clustering takes seconds)."""
    sandbox.call(_in_child, raw, None, None, what=f"reading {ONNX}")


def rebuilt(raw: bytes, ctx):
    """The upload's model.onnx (raw, read once before the replay) is never run: our own export of the replayed recipe
    (ctx.model) with the upload's weights put in (merge), checked to compute the model its recipe builds (int8's
    rounding allowed). Its graph is parsed for that only if it is no larger than our export (parse's bound)."""
    from ..models.adapters import forward
    from ..techniques.ortrun import OrtModel
    from ..techniques.runtime import example, mismatch
    if not isinstance(ctx.model, OrtModel):
        raise CompressError(f"{ONNX} cannot be rebuilt here: this recipe does not export to ONNX Runtime on this "
                            f"machine ({ctx.applied.get('runtime_reason', 'eager runs instead')})")
    with tempfile.TemporaryDirectory() as d:
        sandbox.call(_in_child, raw, ctx.model.onnx, Path(d) / ONNX, what=f"reading {ONNX}")
        ort, ids = OrtModel((Path(d) / ONNX).read_bytes(), ctx.model.setting), example(ctx.base)
    try:
        got = ort(*ids)
    except Exception:  # noqa: BLE001 - our graph; only the upload's numbers can make it fail
        raise CompressError(f"{ONNX}'s weights do not run in this recipe's graph; refused") from None
    with torch.no_grad():
        want = forward(ctx.sized_model, ctx.base.adapter, *ids)
    if why := mismatch(ONNX, got, want, 0.5):
        raise CompressError(f"{why}: it does not compute the model its recipe builds; refused")
    return ort

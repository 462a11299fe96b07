"""Hostile model.onnx files in a compressed-model zip (split from tests/test_hostile_zips.py): each refused by
load_compressed in one line and never handed to ONNX Runtime; what runs is always our own export's graph, with the
upload's weights put in."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compress as C
from test_export import _zip, bundled  # noqa: F401 - the fixture
from test_hostile_zips import _files, refused, sessions  # noqa: F401 - sessions: the fixture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def onnx_zips(tiny_bert, tiny_gpt):
    out = {}
    for name, base in (("tiny-bert", tiny_bert), ("tiny-gpt", tiny_gpt)):
        comp = C.compress(base, C.Recipe(quant="int8", runtime="onnxruntime"))
        assert comp.applied["runtime_applied"] == "onnxruntime", comp.applied.get("runtime_reason")
        out[name] = _files(comp)
    return out


def _edit(raw: bytes, fn) -> bytes:
    m = onnx.load_model_from_string(raw)
    fn(m)
    return m.SerializeToString()


def _external_tensor(name="leak"):
    t = numpy_helper.from_array(np.zeros(4, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=".streamlit/secrets.toml")
    return t


def _constant_attr(m):  # a Constant node whose tensor attribute is external data
    m.graph.node.insert(0, helper.make_node("Constant", [], ["leak"], value=_external_tensor()))


def _subgraph(m):  # an If whose branch holds an external initializer
    branch = helper.make_graph([helper.make_node("Identity", ["leak"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [_external_tensor()])
    cond = numpy_helper.from_array(np.array(True), "cond")
    m.graph.initializer.append(cond)
    m.graph.node.append(helper.make_node("If", ["cond"], ["leaked"], then_branch=branch, else_branch=branch))


def _loop(m):  # 2^62 iterations
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    m.graph.initializer.extend([numpy_helper.from_array(np.array(2**62, np.int64), "n"),
                                numpy_helper.from_array(np.array(True), "c0")])
    m.graph.node.append(helper.make_node("Loop", ["n", "c0"], [], body=body))


def _huge_constant(m):
    m.graph.initializer.append(numpy_helper.from_array(np.array([2**20, 2**20, 64], np.int64), "shape"))
    m.graph.node.append(helper.make_node("ConstantOfShape", ["shape"], ["huge"]))


def _function(m):
    m.functions.append(helper.make_function("evil", "f", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
                                            [helper.make_opsetid("", 17)]))


def _first(m):
    return max(m.graph.initializer, key=lambda t: len(t.raw_data))


def _nan(m):
    t = _first(m)
    arr = numpy_helper.to_array(t).copy()
    if arr.dtype.kind != "f":  # an int8 weight: put the NaN in a float initializer instead
        t = next(t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.raw_data) > 4)
        arr = numpy_helper.to_array(t).copy()
    arr.flat[0] = np.nan
    t.raw_data = arr.tobytes()


def _scale(value):
    def change(m):  # a quantization scale of 0 (the model reads no token: every row is 0) or below
        t = next(t for t in m.graph.initializer if t.name.endswith("_scale") and t.data_type == TensorProto.FLOAT)
        arr = numpy_helper.to_array(t).copy()
        arr.flat[0] = value
        t.raw_data = arr.tobytes()
    change.__name__ = f"_scale_{value:g}"
    return change


def _short_bytes(m):
    t = _first(m)
    t.raw_data = t.raw_data[:-1]


def _other_shape(m):
    t = _first(m)
    t.dims[0] += 1


def _renamed_input(m):
    m.graph.input[0].name = "ids"


def _bloat(m):
    m.doc_string = "x" * (len(m.SerializeToString()) // 10 + 200_000)


def _external_initializer(m):
    t = _first(m)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="/etc/passwd")


ONNX_CASES = [(_constant_attr, "not the graph"), (_subgraph, "not the graph"), (_loop, "not the graph"),
              (_huge_constant, "not the graph"), (_function, "functions"), (_nan, "NaN"),
              (_short_bytes, "do not fit"), (_other_shape, "stores"), (_renamed_input, "other inputs"),
              (_bloat, "bytes where"), (_external_initializer, "external data"), (_scale(0.0), "zero or negative"),
              (_scale(-0.5), "zero or negative")]


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt"])
@pytest.mark.parametrize("change, match", ONNX_CASES, ids=[c.__name__ for c, _ in ONNX_CASES])
def test_a_hostile_model_onnx_is_refused_and_never_run(bundled, onnx_zips, sessions, tmp_path, model, change, match):
    files = onnx_zips[model]
    bad = _edit(files["model.onnx"], change)
    refused(tmp_path, {**files, "model.onnx": bad}, match)
    assert bad not in sessions  # parsed, compared, never run
    ours = _nodes(files["model.onnx"])
    assert all(_nodes(graph) == ours for graph in sessions)  # what ran is our own export's graph, node for node


def _nodes(raw: bytes) -> list:
    return [n.SerializeToString() for n in onnx.load_model_from_string(raw).graph.node]


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt"])
def test_an_onnx_zip_uploads_back_and_runs_our_graph_with_its_weights(bundled, onnx_zips, sessions, tmp_path, model):
    files = onnx_zips[model]
    good = onnx.load_model_from_string(files["model.onnx"])
    t = next(t for t in good.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.raw_data) > 64)
    arr = numpy_helper.to_array(t).copy()
    arr *= 1.001  # "healed": other numbers, same graph
    t.raw_data, t.doc_string = arr.tobytes(), "a note of the upload's"
    t.float_data.extend([1e30] * arr.size)  # a second copy of the values, which the raw bytes win over
    back = C.load_compressed(_zip(tmp_path, {**files, "model.onnx": good.SerializeToString()}))
    assert back.applied["runtime_applied"] == "onnxruntime"
    ran = onnx.load_model_from_string(back.model.onnx)
    got = next(x for x in ran.graph.initializer if x.name == t.name)
    assert np.array_equal(numpy_helper.to_array(got), arr)  # the upload's weights, in the graph that runs
    assert not got.float_data and not got.doc_string  # rebuilt from its values: nothing else of it carried


def test_an_index_past_its_table_is_refused_as_in_the_weights_file(bundled, tiny_bert, sessions, tmp_path):
    """A pruned vocabulary's index mapping [CLS] past the table passed the load (its check ids never held [CLS]);
    every Apply then failed in ONNX Runtime's Gather, not in one line."""
    files = _files(C.compress(tiny_bert, C.Recipe(vocab=0.1, runtime="onnxruntime")))

    def past(m):
        t = next(t for t in m.graph.initializer if "vocab_index" in t.name)
        a = numpy_helper.to_array(t).copy()
        a[101] = np.iinfo(a.dtype).max
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    refused(tmp_path, {**files, "model.onnx": _edit(files["model.onnx"], past)}, "holds indices outside 0..")


def test_a_protobuf_bomb_is_parsed_in_a_child_bounded_by_one_job_s_memory(bundled, onnx_zips, tmp_path, monkeypatch):
    """8 MB of empty initializers (deflated in the zip to a few KB) take ~100x that parsed (2 GB for 16 MB, before):
    in a job the parse runs in the sandbox's child under the job's memory bound, and this process does not grow."""
    import resource
    from compress.serve import jobs
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "100")
    inner = b"\x2a\x00" * (4 << 20)  # GraphProto field 5 (initializer), empty, 4 million times
    raw = b"\x3a\x80\x80\x80\x04" + inner  # ModelProto field 7 (graph), length 8 MiB as a varint
    assert len(inner) == 8 << 20
    path = _zip(tmp_path, {**onnx_zips["tiny-bert"], "model.onnx": raw})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q = jobs.Queue(1)
    job = q.submit("load", lambda j: C.load_compressed(path), owner="tab")
    assert q.wait(job, 300)
    assert job.state == "failed" and "\n" not in job.error
    assert job.error == "model.onnx is not a readable ONNX model" or "bytes where this recipe's export is" in \
        job.error  # (the child's MemoryError; or, parsed there within the bound, refused by size before the merge)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KB

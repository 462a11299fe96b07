"""An upload's limits per resource (compress/models/limits.py): one variable each for the library and the app's
uploader and server; bf16 weights kept or widened; the memory a load needs refused before it allocates; the smaller
default workload of a big model. Tiny models built in the test."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import compress as C
from builders import build_family, zip_dir
from compress.models import limits, uploads

pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")


@pytest.fixture(scope="module")
def bf16_zip(tmp_path_factory):
    """A tiny Llama saved in bfloat16, as a zip."""
    d = tmp_path_factory.mktemp("bf16")
    build_family("llama", d)
    w = d / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(w).items()}, w)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "bfloat16"}))
    return zip_dir(d, d.parent / "bf16.zip")


def test_each_variable_sets_its_limit_in_one_line(bf16_zip, monkeypatch):
    monkeypatch.setenv("COMPRESS_MAX_PARAMS", "1000")
    with pytest.raises(C.CompressError, match=r"parameters; the limit is 1,000 \(COMPRESS_MAX_PARAMS; nothing was "
                                              r"allocated\)$") as e:
        C.load_upload(bf16_zip)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("COMPRESS_MAX_PARAMS", "a lot")
    with pytest.raises(C.CompressError,
                       match="COMPRESS_MAX_PARAMS must be a whole number above 0 and at most 1e\\+15, got 'a lot'"):
        C.load_upload(bf16_zip)
    monkeypatch.delenv("COMPRESS_MAX_PARAMS")
    monkeypatch.setenv("COMPRESS_MAX_UPLOAD_MB", "1_000")
    assert C.max_upload_mb() == 1000 and C.max_params() == limits.DEFAULT_PARAMS


def test_bf16_weights_are_kept_or_widened_and_the_card_says_which(bf16_zip):
    kept, wide = C.load_upload(bf16_zip, "keep"), C.load_upload(bf16_zip)
    assert {p.dtype for p in kept.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in wide.model.parameters()} == {torch.float32}
    assert (kept.info["dtype"], wide.info["dtype"]) == ("bfloat16, kept", "float32, widened from bfloat16")
    x = torch.randint(0, kept.model.config.vocab_size, (1, 8))
    with torch.no_grad():  # the same weights: bf16 values widen exactly
        assert torch.allclose(kept.model(x).logits.float(), wide.model(x).logits, atol=0.1)
    comp = C.compress(kept, C.Recipe(quant="int8"))  # an Apply widens its own copy; the original stays bf16
    assert {p.dtype for p in kept.model.parameters()} == {torch.bfloat16}
    assert C.numbers(kept)["size_bytes"] < 0.6 * C.numbers(wide)["size_bytes"]  # half the bytes held
    m = C.measure_compression(kept, comp, timed=False).to_dict()  # quality of a bf16 original beside a float32 copy
    assert m["compressed"]["quality"] and m["original"]["size_bytes"] == C.numbers(kept)["size_bytes"]
    from compress.outputs.export import card
    assert card(comp)["original"]["weights"] == "bfloat16, kept"
    assert card(C.compress(wide, C.Recipe(quant="int8")))["original"]["weights"] == "float32, widened from bfloat16"
    with pytest.raises(C.CompressError, match="dtype must be one of float32, keep"):
        C.load_upload(bf16_zip, "int3")


def test_a_load_over_the_memory_budget_is_refused_before_it_allocates(bf16_zip, monkeypatch):
    uploads.clear_cache()
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "0.01")
    monkeypatch.setattr(uploads, "model_class", lambda task: pytest.fail("allocated before the check"))
    for dtype, per in (("keep", 2), ("float32", 4)):  # params x bytes per weight x 2 copies
        with pytest.raises(C.CompressError, match=rf"^load of bf16.zip needs about [\d.]+ MB \([\d.]+M params x "
                                                  rf"{per} bytes x 2\) and a job here may use 0 MB") as e:
            C.load_upload(bf16_zip, dtype)
        assert "\n" not in str(e.value)


def test_a_big_model_gets_a_smaller_default_workload_and_the_words_why():
    small, why = C.default_workload(limits.BIG_PARAMS, {"kind": "ids", "batch": 8, "seq": 128})
    assert small == {"kind": "ids", "batch": 8, "seq": 128} and why == ""
    big, why = C.default_workload(limits.BIG_PARAMS + 1, {"kind": "ids", "batch": 8, "seq": 128})
    assert big == {"kind": "ids", "batch": 1, "seq": 128} and why.startswith("over 300M parameters: ")
    assert C.default_workload(10**9, {"kind": "sentences"}) == ({"kind": "sentences"}, "")


def test_the_sidebar_uploader_and_the_server_follow_the_variable(app, monkeypatch):
    from streamlit import config
    monkeypatch.setenv("COMPRESS_MAX_UPLOAD_MB", "123")
    monkeypatch.setattr(limits, "BIG_PARAMS", 0)  # the tiny model counts as big: the Compress page says batch 1
    try:
        app.run()
        app.sidebar.radio(key="model_source").set_value("Upload a zip").run()
        sizes = [e.proto.max_upload_size_mb for e in app.get("file_uploader")]
        assert sizes == [123] and config.get_option("server.maxUploadSize") == 123
        app.switch_page("ui/pages/compress.py").run()
        assert app.number_input(key="live_batch").value == 1
        assert any("default latency workload is batch 1" in c.value for c in app.caption)
    finally:
        config.set_option("server.maxUploadSize", limits.DEFAULT_UPLOAD_MB)

"""Hostile and malformed uploads: each one is refused with a CompressError a person can read, runs no
code, writes nothing outside its temp dir, and leaves no temp files behind. The zip container's own attacks (paths,
links, bombs, compression methods): tests/test_upload_zips.py."""
import builtins
import json
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import compress as C
from compress.models import uploads
from builders import build_family


pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")


def make_zip(path, files: dict, folder=""):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(folder + name, data)
    return path


def with_config(good, **changes):
    cfg = {**json.loads(good["config.json"]), **changes}
    return {**good, "config.json": json.dumps({k: v for k, v in cfg.items() if v is not None})}


def refused(path, match, tmpdirs):
    with pytest.raises(C.CompressError, match=match) as e:
        C.load_model(str(path))
    assert not list(tmpdirs.iterdir()), "temp files left behind"
    return str(e.value)


def test_a_valid_upload_loads(good, tmp_path, tmpdirs):
    b = C.load_model(str(make_zip(tmp_path / "ok.zip", good)))
    assert b.info["model_type"] == "bert" and not list(tmpdirs.iterdir())


def test_empty_file(tmp_path, tmpdirs):
    (tmp_path / "m.zip").write_bytes(b"")
    refused(tmp_path / "m.zip", "empty", tmpdirs)


def test_not_a_zip(tmp_path, tmpdirs):
    (tmp_path / "m.zip").write_text("hello, I am a text file")
    refused(tmp_path / "m.zip", "not a zip", tmpdirs)


def test_cut_off_zip(good, tmp_path, tmpdirs):
    data = make_zip(tmp_path / "ok.zip", good).read_bytes()
    (tmp_path / "m.zip").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "m.zip", "zip", tmpdirs)


def test_no_config(good, tmp_path, tmpdirs):
    refused(make_zip(tmp_path / "m.zip", {"model.safetensors": good["model.safetensors"]}), "no config.json", tmpdirs)


def test_config_too_deep(good, tmp_path, tmpdirs):
    refused(make_zip(tmp_path / "m.zip", good, folder="a/b/"), "no config.json", tmpdirs)


def test_invalid_json(good, tmp_path, tmpdirs):
    refused(make_zip(tmp_path / "m.zip", {**good, "config.json": "{'model_type': bert"}), "not valid JSON", tmpdirs)
    refused(make_zip(tmp_path / "m.zip", {**good, "config.json": "[1, 2]"}), "JSON object", tmpdirs)


@pytest.mark.parametrize("model_type", ["t5", None, "../../etc"])
def test_unknown_model_type(good, tmp_path, tmpdirs, model_type):
    cfg = {**json.loads(good["config.json"]), "model_type": model_type}
    msg = refused(make_zip(tmp_path / "m.zip", {**good, "config.json": json.dumps(cfg)}), "not supported", tmpdirs)
    assert "bert" in msg and "gpt2" in msg and "llama" in msg  # says what is supported


def test_invalid_config_value(good, tmp_path, tmpdirs):
    refused(make_zip(tmp_path / "m.zip", with_config(good, hidden_size="abc")), "not a valid bert config", tmpdirs)


@pytest.mark.parametrize("changes", [{"hidden_size": 64}, {"vocab_size": 2000}, {"intermediate_size": 48},
                                     {"num_hidden_layers": 3}, {"num_hidden_layers": 1}])
def test_config_does_not_match_the_weights(good, tmp_path, tmpdirs, changes):
    refused(make_zip(tmp_path / "m.zip", with_config(good, **changes)), "does not match the weights", tmpdirs)


def test_truncated_weights(good, tmp_path, tmpdirs):
    w = good["model.safetensors"]
    refused(make_zip(tmp_path / "m.zip", {**good, "model.safetensors": w[: len(w) // 2]}), "truncated", tmpdirs)
    refused(make_zip(tmp_path / "m.zip", {**good, "model.safetensors": w[:5]}), "truncated", tmpdirs)


def test_hidden_not_divisible_by_heads(good, tmp_path, tmpdirs):
    refused(make_zip(tmp_path / "m.zip", with_config(good, num_attention_heads=5)), "not divisible", tmpdirs)


@pytest.fixture
def no_extraction(monkeypatch):
    """Fails the test if anything is extracted or any model is built."""
    def boom(*a, **k):
        raise AssertionError("extracted or allocated before refusing")
    monkeypatch.setattr(uploads, "extract", boom)
    monkeypatch.setattr(uploads, "_load_dir", boom)


def test_absurd_config_is_refused_before_anything_is_allocated(good, tmp_path, tmpdirs, no_extraction):
    z = make_zip(tmp_path / "m.zip", with_config(good, hidden_size=65536, num_hidden_layers=90,
                                                  num_attention_heads=64, intermediate_size=262144))
    assert "limit" in refused(z, "parameters", tmpdirs)


def test_nan_and_inf_weights(good, tmp_path, tmpdirs):
    (tmp_path / "w.safetensors").write_bytes(good["model.safetensors"])
    for bad in (float("nan"), float("inf")):
        w = load_file(tmp_path / "w.safetensors")
        w["encoder.layer.1.output.dense.weight"][0, 0] = bad
        save_file(w, tmp_path / "bad.safetensors", metadata={"format": "pt"})
        z = make_zip(tmp_path / "m.zip", {**good, "model.safetensors": (tmp_path / "bad.safetensors").read_bytes()})
        assert "encoder.layer.1.output.dense" in refused(z, "NaN or infinite", tmpdirs)


def test_lone_safetensors(good, tmp_path, tmpdirs):
    (tmp_path / "model.safetensors").write_bytes(good["model.safetensors"])
    refused(tmp_path / "model.safetensors", "alone is not enough.*config.json", tmpdirs)


class _Evil:
    """Unpickling this creates a marker file: proof of code execution."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def test_pickle_weights_are_never_unpickled(good, tmp_path, tmpdirs):
    payload = pickle.dumps(_Evil(tmp_path / "proof"))
    pickle.loads(payload).close()  # the payload works: loading it runs code
    assert (tmp_path / "proof").exists()
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Evil(marker))
    (tmp_path / "pytorch_model.bin").write_bytes(payload)
    for upload in (make_zip(tmp_path / "m.zip", {"config.json": good["config.json"], "pytorch_model.bin": payload}),
                   tmp_path / "pytorch_model.bin"):
        msg = refused(upload, "pickle", tmpdirs)
        assert "safetensors" in msg and "never opened" in msg
    assert not marker.exists()


def test_pickle_next_to_safetensors_is_ignored(good, tmp_path, tmpdirs):
    marker = tmp_path / "ran"
    z = make_zip(tmp_path / "m.zip", {**good, "pytorch_model.bin": pickle.dumps(_Evil(marker))})
    C.load_model(str(z))
    assert not marker.exists() and not list(tmpdirs.iterdir())


def test_no_weights_at_all(good, tmp_path, tmpdirs):
    refused(make_zip(tmp_path / "m.zip", {"config.json": good["config.json"]}), "no \\*.safetensors", tmpdirs)


def test_two_models_in_one_zip(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "m.zip", good, folder="a/")
    with zipfile.ZipFile(z, "a") as zf:
        for name, data in good.items():
            zf.writestr("b/" + name, data)
    refused(z, "several models", tmpdirs)


def test_already_quantized_checkpoint(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "m.zip", with_config(good, quantization_config={"quant_method": "bitsandbytes"}))
    refused(z, "already quantized", tmpdirs)


def test_huge_config_file(good, tmp_path, tmpdirs, no_extraction):
    cfg = {**json.loads(good["config.json"]), "padding": "x" * 2_000_000}
    refused(make_zip(tmp_path / "m.zip", {**good, "config.json": json.dumps(cfg)}), "config.json is", tmpdirs)


def test_missing_path_and_unknown_name(tmp_path):
    for name in (str(tmp_path / "nothing.zip"), "not-a-model"):
        with pytest.raises(C.CompressError, match="unknown model"):
            C.load_model(name)


def test_tokenizer_larger_than_the_vocab_degrades_with_a_note(tmp_path, tmpdirs):
    build_family("bert", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(cfg["vocab_size"] + 50)]
    (tmp_path / "m" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    b = C.load_model(str(tmp_path / "m"))  # a folder this time
    assert b.tokenizer is None and "vocab.txt is refused: it gives token id 1,054 but the model's table has 1,000" \
        in b.info["note"]  # (from the file: the tokenizer is not built)
    assert torch.isfinite(torch.tensor(list(C.quality(b, b).values()))).all()
    assert not list(tmpdirs.iterdir())


def test_limits_are_importable(monkeypatch):
    monkeypatch.delenv("COMPRESS_MAX_UPLOAD_MB", raising=False)
    monkeypatch.delenv("COMPRESS_MAX_PARAMS", raising=False)
    assert C.MAX_UPLOAD_BYTES == uploads.MAX_UPLOAD_BYTES == C.max_upload_mb() * 2**20 == 3200 * 2**20
    assert C.MAX_PARAMS == C.max_params() == 1_500_000_000


def test_remote_code_is_never_run(good, tmp_path, tmpdirs):
    """auto_map entries point at code shipped in the upload: a config asking for it is refused in one line; a
    tokenizer asking for it loads without its tokenizer; the code is neither extracted nor imported."""
    marker = tmp_path / "imported"
    evil = f"open({str(marker)!r}, 'w').close()\n"
    cfg = with_config(good, auto_map={"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"})
    tok_cfg = json.dumps({"tokenizer_class": "EvilTokenizer",
                          "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}})
    extra = {"evil.py": evil, "tokenizer_config.json": tok_cfg, "vocab.txt": "[UNK]\n"}
    refused(make_zip(tmp_path / "m.zip", {**cfg, **extra}), "auto_map.*its own code", tmpdirs)
    b = C.load_model(str(make_zip(tmp_path / "t.zip", {**good, **extra})))
    assert type(b.model).__name__ == "BertModel" and b.tokenizer is None and "tokenizer" in b.info["note"]
    assert not marker.exists() and not list(tmpdirs.iterdir())



"""Hostile and malformed uploads: each one is refused with a CompressError a person can read, runs no
code, writes nothing outside its temp dir, and leaves no temp files behind."""
import builtins
import json
import pickle
import struct
import time
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import compress as C
from compress.models import staging, uploads
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


def test_zip_slip(good, tmp_path, tmpdirs):
    for evil in ("../escaped.txt", "../../escaped.txt", "/tmp/escaped-abs.txt", "sub\\..\\..\\escaped.txt"):
        z = make_zip(tmp_path / "m.zip", {**good, evil: b"pwned"})
        refused(z, "unsafe path", tmpdirs)
    escaped = [tmpdirs.parent / "escaped.txt", tmp_path.parent / "escaped.txt", tmp_path / "escaped.txt"]
    assert not any(p.exists() for p in escaped)
    assert not (tmpdirs.parent / "pwned").exists()


def test_symlink_entry(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "m.zip", good)
    with zipfile.ZipFile(z, "a") as zf:
        info = zipfile.ZipInfo("tokenizer.json")
        info.external_attr = (0o120777 << 16)  # a symbolic link to /etc/passwd
        zf.writestr(info, "/etc/passwd")
    refused(z, "symbolic link", tmpdirs)


def _patch_declared_size(path, entry: str, size: int):
    """Rewrite the uncompressed size an entry declares (local header and central directory)."""
    data = bytearray(path.read_bytes())
    name = entry.encode()
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # offsets of "uncompressed size"
        i = data.find(sig)
        while i >= 0:
            name_at = i + (30 if sig == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(name)] == name:
                data[i + off:i + off + 4] = struct.pack("<I", size)
            i = data.find(sig, i + 4)
    path.write_bytes(bytes(data))


def test_zip_bomb_is_refused_from_declared_sizes_without_extracting(good, tmp_path, tmpdirs, no_extraction):
    z = make_zip(tmp_path / "bomb.zip", good)
    _patch_declared_size(z, "model.safetensors", 0xF0000000)  # claims ~3.75 GB uncompressed
    assert z.stat().st_size < 1_000_000
    t0 = time.perf_counter()
    msg = refused(z, "limit", tmpdirs)
    assert "nothing was extracted" in msg and time.perf_counter() - t0 < 5


def test_real_deflate_bomb_under_a_small_limit(good, tmp_path, tmpdirs, no_extraction, monkeypatch):
    monkeypatch.setenv("COMPRESS_MAX_UPLOAD_MB", "1")  # the operator's variable: 1 MB
    z = make_zip(tmp_path / "bomb.zip", {**good, "vocab.txt": b"\0" * 5_000_000})  # 5 MB of zeros, ~5 KB zipped
    assert z.stat().st_size < 2**20  # the zip itself is within the limit; what it unpacks to is not
    refused(z, r"5 MB uncompressed; the limit is 1 MB \(COMPRESS_MAX_UPLOAD_MB", tmpdirs)


@pytest.mark.parametrize("method, name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")])
def test_bzip2_and_lzma_entries_are_refused_before_they_are_inflated(good, tmp_path, tmpdirs, monkeypatch, method,
                                                                     name):
    """zipfile inflates bzip2 and LZMA a whole megabyte of input at a time, before any size is compared (a 1.5 KB
    bzip2 entry of zeros is 4 GB): such an entry is refused from the directory, never opened; the compressed-model
    path (its card and recipe) reads the same directory."""
    z = tmp_path / "bz.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in good.items():
            zf.writestr(n, data)
        zf.writestr("config.json.bak", b"\0" * 20_000_000, compress_type=method)  # 20 MB of zeros, a few KB zipped
    _patch_declared_size(z, "config.json.bak", 100)
    assert z.stat().st_size < 2 * sum(len(v) for v in good.values()) + 100_000
    opened = []
    real = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, n, *a, **k: opened.append(getattr(n, "filename", n))
                        or real(self, n, *a, **k))
    refused(z, f"compressed with {name}; only stored or deflated", tmpdirs)
    assert "config.json.bak" not in opened
    back = tmp_path / "back.zip"
    with zipfile.ZipFile(back, "w", method) as zf:
        zf.writestr("card.json", "{}")
        zf.writestr("recipe.json", "{}")
    with pytest.raises(C.CompressError, match=f"compressed with {name}"):
        C.load_compressed(back)


def test_entry_larger_than_it_declares(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "m.zip", good)
    _patch_declared_size(z, "model.safetensors", 1000)  # lies: the data is bigger; at most 1000 bytes are read
    refused(z, "damaged|truncated", tmpdirs)


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
    assert b.tokenizer is None and "tokens but the model only" in b.info["note"]
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


def test_too_many_entries_is_refused_before_reading_the_directory(good, tmp_path, tmpdirs, monkeypatch):
    monkeypatch.setattr(staging, "MAX_ZIP_ENTRIES", 20)
    z = make_zip(tmp_path / "m.zip", {**good, **{f"junk/{i}": b"" for i in range(30)}})
    monkeypatch.setattr(zipfile, "ZipFile", None)  # proof: the directory is never parsed
    refused(z, "more than 20 files", tmpdirs)


def test_encrypted_entry(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "m.zip", good)
    data = bytearray(z.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit everywhere
        i = data.find(sig)
        while i >= 0:
            data[i + off] |= 1
            i = data.find(sig, i + 4)
    z.write_bytes(bytes(data))
    refused(z, "unsupported feature|encrypted", tmpdirs)

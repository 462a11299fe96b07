"""Hostile uploads found by a review (issue 17): each refused by load_upload with one CompressError line, in
seconds and without allocating the model, leaving nothing behind and reading nothing outside the upload."""
import json
import resource
import struct

import pytest
import torch

import compress as C
from compress.models import staging
from test_uploads import make_zip, refused, with_config

pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")


def _one_line(msg: str) -> str:
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def _index(good, target: str) -> dict:
    files = {k: v for k, v in good.items() if k != "model.safetensors"}
    files["model-00001-of-00001.safetensors"] = good["model.safetensors"]
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": {
        "embeddings.word_embeddings.weight": target}}).encode()
    return files


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../etc/passwd", "sub/model.safetensors",
                                    "missing.safetensors", "..\\\\x.safetensors"])
def test_a_shard_index_may_only_name_shards_of_the_upload(good, tmp_path, tmpdirs, target):
    msg = refused(make_zip(tmp_path / "m.zip", _index(good, target)), "not files of this upload", tmpdirs)
    assert "exist" not in _one_line(msg)  # says nothing about the server's files


def test_a_shard_index_naming_its_own_shard_loads(good, tmp_path, tmpdirs):
    b = C.load_model(str(make_zip(tmp_path / "ok.zip", _index(good, "model-00001-of-00001.safetensors"))))
    assert b.info["model_type"] == "bert"


@pytest.mark.parametrize("changes, match", [
    (dict(type_vocab_size=2_000_000_000), "parameters"),                         # a huge table, counted
    (dict(num_hidden_layers=20_000, hidden_size=8, num_attention_heads=1, intermediate_size=8), "more than 96"),
    (dict(num_attention_heads=4096), "more than 128"),
    (dict(hidden_act="definitely_not_an_activation"), "can be built"),
    (dict(pad_token_id=10**6), "can be built"),
    (dict(attn_implementation="kernels-community/flash-attn"), "only the built-in"),
    (dict(_attn_implementation="some-org/some-kernel"), "only the built-in"),
    (dict(num_labels=50_000_000), "num_labels = 50,000,000 is more than 10000"),  # 50M label strings, twice: ~40 GB
    (dict(layer_norm_eps=float("nan")), "layer_norm_eps = nan is not a finite number"),  # every output NaN
    (dict(layer_norm_eps=-1.0), "layer_norm_eps = -1.0 must be positive"),
    (dict(hidden_size=10**400), "hidden_size = 1000.* is not a finite number"),  # (OverflowError as a float)
])
def test_configs_that_would_allocate_fetch_or_crash_are_refused_first(good, tmp_path, tmpdirs, changes, match):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _one_line(refused(make_zip(tmp_path / "m.zip", with_config(good, **changes)), match, tmpdirs))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KB: no table (no 20,000 layers) built


def test_a_deeply_nested_config_is_one_line(good, tmp_path, tmpdirs):
    deep = b'{"model_type": "bert", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _one_line(refused(make_zip(tmp_path / "m.zip", {**good, "config.json": deep}), "nested too deeply", tmpdirs))


def test_a_patched_entry_count_gains_nothing(good, tmp_path, tmpdirs, monkeypatch):
    monkeypatch.setattr(staging, "MAX_ZIP_ENTRIES", 20)
    z = make_zip(tmp_path / "m.zip", {**good, **{f"junk/{i}": b"" for i in range(30)}})
    data = bytearray(z.read_bytes())
    i = data.rfind(b"PK\x05\x06")
    data[i + 8:i + 12] = struct.pack("<HH", 1, 1)  # the end record now claims one entry
    z.write_bytes(bytes(data))
    refused(z, "more than 20 files", tmpdirs)


def test_a_huge_central_directory_is_refused_from_the_end_record(good, tmp_path, tmpdirs, monkeypatch):
    monkeypatch.setattr(staging, "MAX_CENTRAL_DIRECTORY", 2_000)
    z = make_zip(tmp_path / "m.zip", {**good, **{f"long-name-{'x' * 80}-{i}": b"" for i in range(30)}})
    refused(z, "more than", tmpdirs)


def zip64(data: bytes, entries: int | None = None) -> bytes:
    """A zip rewritten with ZIP64 end records (as a zip tool writes for a model over 4 GB): the classic end record
    says 0xFFFF / 0xFFFFFFFF, the ZIP64 record the counts (`entries`: a lie about them)."""
    i = data.rfind(b"PK\x05\x06")
    n, cd_size, cd_at = struct.unpack("<HII", data[i + 10:i + 20])
    n = n if entries is None else entries
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_at)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, i, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:i] + record + locator + end


def test_zip64_loads_with_its_counts_checked(good, tmp_path, tmpdirs, monkeypatch):
    z = make_zip(tmp_path / "m.zip", good)
    z.write_bytes(zip64(z.read_bytes()))
    assert C.load_model(str(z)).info["model_type"] == "bert"  # a ZIP64 zip is a zip
    z.write_bytes(zip64(make_zip(tmp_path / "n.zip", good).read_bytes(), entries=2**40))  # a count lie, up
    _one_line(refused(z, "more than 10,000 files", tmpdirs))
    monkeypatch.setattr(staging, "MAX_ZIP_ENTRIES", 20)  # a count lie, down: 30 entries that say 1
    many = make_zip(tmp_path / "many.zip", {**good, **{f"junk/{i}": b"" for i in range(30)}})
    many.write_bytes(zip64(many.read_bytes(), entries=1))
    _one_line(refused(many, "more than 20 files", tmpdirs))
    data = z.read_bytes()
    i = data.rfind(b"PK\x06\x07")
    z.write_bytes(data[:i + 8] + struct.pack("<Q", 0) + data[i + 16:])  # the locator points at no ZIP64 record
    _one_line(refused(z, "ZIP64 end record is missing or damaged", tmpdirs))


def test_a_zip64_bomb_is_refused_from_its_declared_sizes(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "bomb.zip", {**good, "added_tokens.json": b"{}"})  # its directory record is the last
    data = z.read_bytes()
    c, i = data.rfind(b"PK\x01\x02"), data.rfind(b"PK\x05\x06")
    name_len, extra_len = struct.unpack("<HH", data[c + 28:c + 32])
    packed = struct.unpack("<I", data[c + 20:c + 24])[0]
    extra = struct.pack("<HHQQ", 1, 16, 2**42, packed)  # a ZIP64 extra: 4 TB uncompressed, its real packed size
    record = (data[c:c + 20] + struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF) + data[c + 28:c + 30]
              + struct.pack("<H", extra_len + len(extra)) + data[c + 32:c + 46 + name_len] + extra
              + data[c + 46 + name_len:i])
    end = bytearray(data[i:])
    end[12:16] = struct.pack("<I", struct.unpack("<I", end[12:16])[0] + len(extra))  # the directory grew
    z.write_bytes(data[:c] + record + bytes(end))
    _one_line(refused(z, r"declare 4,194,\d+ MB uncompressed; the limit is 3,200 MB", tmpdirs))


def test_local_folders_are_off_unless_the_operator_names_a_root(good, tmp_path, monkeypatch):
    monkeypatch.delenv("COMPRESS_LOCAL_ROOT", raising=False)
    model = tmp_path / "root" / "m"
    model.mkdir(parents=True)
    for name, data in good.items():
        (model / name).write_bytes(data)
    with pytest.raises(C.CompressError, match="off"):
        C.load_local(str(model))
    monkeypatch.setenv("COMPRESS_LOCAL_ROOT", str(tmp_path / "root"))
    assert C.load_local("m").info["model_type"] == "bert"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    for bad in ("../elsewhere", str(outside), "link", "/etc"):
        with pytest.raises(C.CompressError, match="not a folder inside"):
            C.load_local(bad)


def test_healing_text_is_bounded_before_it_is_tokenized(tiny_bert, monkeypatch):
    from compress.techniques import heal, healdev
    monkeypatch.setattr(heal, "MAX_HEAL_TEXTS", 100)
    with pytest.raises(C.CompressError, match="limited to 100 lines"):
        C.compress(tiny_bert, C.Recipe(heal_steps=1), texts=["a sentence of a user's own text"] * 101)
    assert len(healdev.split_dev([f"text {i}" for i in range(50_000)])[1]) == healdev.MAX_DEV


def test_work_is_bounded_with_a_message_naming_the_limit(tiny_gpt, monkeypatch):
    from compress.measure import core as measure
    with pytest.raises(C.CompressError, match="limited to 16,384"):
        C.benchmark(tiny_gpt, tiny_gpt, batch=512, seq=64)
    monkeypatch.setattr(measure, "LOCK_WAIT_S", 0.05)
    with measure._bench_lock():  # another session's benchmark holds the machine
        with pytest.raises(C.CompressError, match="another benchmark"):
            C.benchmark(tiny_gpt, tiny_gpt, batch=1, seq=4)


def test_weights_finite_one_by_one_that_give_no_finite_output_are_refused_at_load(good, tmp_path, tmpdirs):
    from safetensors.torch import load, save
    tensors = load(good["model.safetensors"])
    k = sorted(k for k in tensors if k.endswith("LayerNorm.weight"))[0]
    tensors[k] = torch.full_like(tensors[k], 3e38)
    msg = refused(make_zip(tmp_path / "m.zip", {**good, "model.safetensors": save(tensors)}), "uploaded model gives "
                  "NaN or infinite outputs on a short text", tmpdirs)
    assert "\n" not in msg

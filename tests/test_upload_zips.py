"""The zip itself as the attack (split from tests/test_uploads.py): unsafe paths, links, declared sizes that lie,
bombs of every compression method, encryption, entry counts: each refused in one line before anything is extracted,
nothing written outside the upload's temp dir, no temp files left."""
import struct
import zipfile

import pytest

import compress as C
from compress.models import staging
from test_uploads import make_zip, no_extraction, refused  # noqa: F401 - no_extraction: the fixture

pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")



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
    msg = refused(z, "limit", tmpdirs)  # (no_extraction: nothing was extracted or built before the refusal)
    assert "nothing was extracted" in msg


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


def _patched(path, good, patch):
    """good zipped with make_zip, then patch(bytearray of the zip, offset of its first local header's data)."""
    data = bytearray(make_zip(path, good).read_bytes())
    j = data.find(b"PK\x03\x04")
    patch(data, j + 30 + int.from_bytes(data[j + 26:j + 28], "little") + int.from_bytes(data[j + 28:j + 30], "little"))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("patch, match", [  # each raised past the handlers (a review's crafted zips)
    (lambda d, at: d.__setitem__(d.find(b"PK\x01\x02") + 6, 64), "version 6.4"),  # "version needed": NotImplementedError
    (lambda d, at: d.__setitem__(at, 0xFF), "damaged"),  # a deflate block of the reserved type: zlib.error
], ids=["version", "deflate"])
def test_zips_that_zipfile_or_zlib_cannot_read_are_one_line(good, tmp_path, tmpdirs, patch, match):
    z = _patched(tmp_path / "m.zip", good, patch)
    assert "\n" not in refused(z, match, tmpdirs)
    assert C.is_compressed(z) is False
    with pytest.raises(C.CompressError):
        C.load_compressed(z)


def test_an_entry_without_a_name_is_one_line(good, tmp_path, tmpdirs):
    z = make_zip(tmp_path / "m.zip", good)
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(zipfile.ZipInfo(""), b"x")  # zipfile's is_dir() read its last character: IndexError
    refused(z, "unsafe path '' \\(empty", tmpdirs)
    with pytest.raises(C.CompressError, match="empty"):
        C.load_compressed(z)

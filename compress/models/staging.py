"""An upload's files, checked before anything is extracted: the lone-file refusals, zip paths that never become
file paths, declared sizes and entry counts, and the files next to config.json that are used."""
import contextlib
import json
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import CompressError
from .limits import DEFAULT_UPLOAD_MB, UPLOAD_VAR, max_upload_bytes
from .pooling import MODULES, POOLING

MAX_UPLOAD_BYTES = DEFAULT_UPLOAD_MB * 2**20  # the default; the limit in force is limits.max_upload_bytes()
MAX_CONFIG_BYTES = 1 << 20
MAX_ZIP_ENTRIES = 10_000
MAX_CENTRAL_DIRECTORY = 2 << 20  # bytes of the zip's directory: 10,000 entries with names of ~150 characters
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def upload_path(path, what: str = "an upload") -> Path:
    """The path of an existing file or folder, refused in one line if no file system holds such a name (a NUL, a
    name over 255 bytes) or it is not there; only its base name is ever said."""
    s = str(path)
    if "\0" in s or len(s.encode("utf-8", "replace")) > 4096 or len(Path(s).name.encode("utf-8", "replace")) > 255:
        raise CompressError(f"{what} needs a file name without NUL characters, of at most 255 bytes")
    p = Path(s)
    try:
        if p.exists():
            return p
    except OSError:
        pass
    raise CompressError(f"{p.name[:100]!r} is not {what}: it does not exist")


def refuse_lone_file(p: Path) -> None:
    if p.is_dir():
        return
    size = p.stat().st_size
    if size == 0:
        raise CompressError(f"{p.name} is empty")
    if size > (most := max_upload_bytes()):
        raise CompressError(f"{p.name} is {size / 2**20:,.0f} MB; uploads are limited to {most // 2**20:,} MB "
                            f"({UPLOAD_VAR})")
    if p.suffix == ".safetensors":
        raise CompressError(f"{p.name} alone is not enough: upload a zip or folder holding it with its config.json "
                            "(and tokenizer files)")
    if p.suffix in PICKLE_SUFFIXES:
        raise CompressError(pickle_msg(p.name))
    if not zipfile.is_zipfile(p):
        raise CompressError(f"{p.name} is not a zip file; upload a zip (or folder) with config.json + *.safetensors")


MAX_ST_HEADER = 8 << 20  # bytes of an upload's safetensors header: ~60,000 tensors, a 1B model has a few hundred
MAX_ST_TENSORS = 50_000


def st_header(f, size: int, most: int = MAX_ST_TENSORS, most_bytes: int = MAX_ST_HEADER, name="the weights") -> dict:
    """A safetensors file's header (f: open at its start, size: the file's bytes), sized and counted before it is
    parsed (a header of a million empty tensors costs nothing), with at most `most` entries."""
    n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
    if not 2 <= n <= size - 8:
        raise CompressError(f"{name} is truncated or not a safetensors file (its header is cut or mis-sized)")
    if n > most_bytes:
        raise CompressError(f"{name}'s header is {n:,} bytes; at most {most_bytes:,} are read ({most:,} tensors)")
    try:
        h = json.loads(f.read(n))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CompressError(f"{name} is not a readable safetensors file: its header is not JSON") from None
    meta = h.get("__metadata__") if isinstance(h, dict) else None
    if not isinstance(h, dict) or not isinstance(meta or {}, dict) or len(h) > most + 1 or len(meta or {}) > most:
        raise CompressError(f"{name} lists more than {most:,} tensors")
    return h


def one_line(e: Exception, n: int = 300) -> str:
    """A library's error as one short line, for a message shown to a person."""
    return " ".join(str(e).split())[:n] or type(e).__name__


def pickle_msg(name: str) -> str:
    return (f"{name} is a pickle-based checkpoint, which can run arbitrary code when loaded, so it is never opened "
            "here. Convert it to safetensors first (model.save_pretrained(dir, safe_serialization=True)) and upload "
            "config.json + model.safetensors")


def safe_name(name: str) -> bool:
    """No zip slip: relative, no '..', no backslashes or drive letters; not empty (zipfile's is_dir reads its last
    character: IndexError)."""
    pp = PurePosixPath(name)
    return bool(name) and not (pp.is_absolute() or ".." in pp.parts or "\\" in name or ":" in name)


def listing(p: Path, zf: zipfile.ZipFile | None) -> dict[str, int]:
    """Relative path -> declared size of every file in the upload."""
    if zf is None:  # a folder: its top level and one sub-folder level, never a whole tree
        top = [f for f in p.iterdir()]
        files = [f for f in top if f.is_file()] + [g for f in top if f.is_dir() for g in f.iterdir() if g.is_file()]
        return {f.relative_to(p).as_posix(): f.stat().st_size for f in files}
    out = {}
    for i in zf.infolist():
        if not safe_name(i.filename):
            raise CompressError(f"the zip holds an unsafe path {i.filename[:80]!r} (empty, or pointing outside the "
                                "upload); refused")
        if stat.S_ISLNK(i.external_attr >> 16):
            raise CompressError(f"the zip holds a symbolic link {i.filename[:80]!r}; refused")
        _method(i)
        if not i.is_dir():
            out[i.filename] = i.file_size
    return out


def select(files: dict[str, int]) -> dict[str, str]:
    """The files to use, {zip path: flat name}: those next to config.json, at the top or in one sub-folder, and
    sentence-transformers' modules.json there and its 1_Pooling/config.json (flat: pooling.POOLING)."""
    configs = sorted((n.count("/"), n) for n in files if PurePosixPath(n).name == "config.json")
    if not configs or configs[0][0] > 1:
        raise CompressError("no config.json found (it must be at the top of the upload or in one sub-folder); "
                            "upload a Hugging Face model folder: config.json + *.safetensors (+ tokenizer files)")
    if len(configs) > 1 and configs[1][0] == configs[0][0]:
        raise CompressError(f"several models in one upload ({configs[0][1][:80]!r}, {configs[1][1][:80]!r}); "
                            "upload one")
    root = str(PurePosixPath(configs[0][1]).parent)
    here = {n: PurePosixPath(n).name for n in files if str(PurePosixPath(n).parent) == root}
    used = {n: b for n, b in here.items() if b in ("config.json", MODULES) or b in TOKENIZER_FILES
            or b.endswith((".safetensors", ".safetensors.index.json"))}
    pooling = str(PurePosixPath(root) / "1_Pooling" / "config.json")
    if pooling in files:
        used[pooling] = POOLING
    for n, b in used.items():  # sentence-transformers' settings: small JSON files, sized before they are read
        if b in (MODULES, POOLING) and files[n] > MAX_CONFIG_BYTES:
            raise CompressError(f"{n[-60:]} is {files[n]:,} bytes; a real one is a few hundred bytes")
    if not any(b.endswith(".safetensors") for b in used.values()):
        pickles = [b for b in here.values() if b.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise CompressError(pickle_msg(pickles[0]))
        raise CompressError("no *.safetensors weights next to config.json")
    total = sum(files[n] for n in used)
    if total > (most := max_upload_bytes()):  # a zip bomb's declared sizes; copy_entry holds an entry to its own
        raise CompressError(f"the upload's files declare {total / 2**20:,.0f} MB uncompressed; the limit is "
                            f"{most // 2**20:,} MB ({UPLOAD_VAR}; nothing was extracted)")
    return used


def open_zip(p: Path) -> zipfile.ZipFile:
    """Open a zip after checking the entry count and the directory's size its end record declares (zipfile would
    otherwise parse an object per entry first: millions of empty entries fit in the size limit). A ZIP64 zip (a
    model over 4 GB, or a zip tool that always writes them) declares both in its ZIP64 end record instead: read and
    checked the same way. The count is checked again on the parsed directory, so a count that lies gains nothing."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
        i = tail.rfind(b"PK\x05\x06")
        if i >= 0 and len(tail) >= i + 22:
            count, cd_size = struct.unpack("<HI", tail[i + 10:i + 16])
            if tail[max(0, i - 20):i - 16] == b"PK\x06\x07" or count == 0xFFFF or cd_size == 0xFFFFFFFF:
                count, cd_size = _zip64_counts(f, tail[max(0, i - 20):i], p.name)
            if count > MAX_ZIP_ENTRIES or cd_size > MAX_CENTRAL_DIRECTORY:
                raise CompressError(f"{p.name} holds more than {MAX_ZIP_ENTRIES:,} files; a model folder has a handful")
    try:
        zf = zipfile.ZipFile(p)
    except Exception as e:  # noqa: BLE001 - an untrusted file (also NotImplementedError: a "version needed" of 6.4)
        raise CompressError(f"{p.name} is not a readable zip file: {one_line(e)}") from None
    if len(zf.infolist()) > MAX_ZIP_ENTRIES:
        zf.close()
        raise CompressError(f"{p.name} holds more than {MAX_ZIP_ENTRIES:,} files; a model folder has a handful")
    return zf


def _zip64_counts(f, locator: bytes, name: str) -> tuple[int, int]:
    """(entries, directory bytes) of a ZIP64 end record, found by its locator (the 20 bytes before the end record)."""
    bad = CompressError(f"{name} is not a readable zip file: its ZIP64 end record is missing or damaged")
    if len(locator) < 20 or locator[:4] != b"PK\x06\x07":
        raise bad
    (at,) = struct.unpack("<Q", locator[8:16])
    f.seek(min(at, 1 << 62))
    rec = f.read(56)
    if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
        raise bad
    count, cd_size = struct.unpack("<QQ", rec[32:48])  # entries in all, the directory's bytes
    return count, cd_size


def check_index(raw: bytes, weights: set[str]) -> None:
    """A sharded model's model.safetensors.index.json: its weight_map may only name shards of this upload, by a
    bare file name (transformers joins these names to the folder: a path would load any file of the server)."""
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # (a 4,301-digit int too)
        raise CompressError(f"the safetensors index is not valid JSON: {one_line(e)}") from None
    shards = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(shards, dict) or not all(isinstance(v, str) for v in shards.values()):
        raise CompressError("the safetensors index has no weight_map of tensor names to shard files")
    bad = sorted({v for v in shards.values() if v not in weights or PurePosixPath(v).name != v})
    if bad:
        raise CompressError(f"the safetensors index names {len(bad)} shard(s) that are not files of this upload "
                            f"(e.g. {bad[0][:80]!r}); refused")


def _method(info) -> None:
    """Only stored and deflated entries: zipfile inflates deflate in bounded pieces, but bzip2 and LZMA a whole
    megabyte of input in one call, before any size is compared (a 1.5 KB bzip2 entry of zeros took 4 GB)."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        name = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}.get(info.compress_type,
                                                                           f"method {info.compress_type}")
        raise CompressError(f"{info.filename[:80]!r} is compressed with {name}; only stored or deflated zip entries "
                            "are accepted (what zip, Python and every OS's compress command write by default)")


def copy_entry(zf, info, dst) -> None:
    """Copy one entry into a file object, never more bytes than it declared (zipfile also checks the CRC)."""
    n = 0
    _method(info)
    try:
        with zf.open(info) as src:
            while chunk := src.read(1 << 20):
                n += len(chunk)
                if n > info.file_size:
                    raise CompressError(f"{info.filename[:80]!r} is larger than the zip declares; refused")
                dst.write(chunk)
    except CompressError:
        raise
    except MemoryError:
        raise CompressError(f"{info.filename[:80]!r} could not be unpacked within this server's memory; "
                            "refused") from None
    except Exception as e:  # noqa: BLE001 - bad CRC, cut data, encrypted, a deflate stream zlib refuses: the file's
        raise CompressError(f"the zip is damaged or uses an unsupported feature ({info.filename[:80]}: "
                            f"{one_line(e)})") from None


def extract(zf, info, dest: Path) -> None:
    with open(dest, "wb") as f:
        copy_entry(zf, info, f)


@contextlib.contextmanager
def quiet():
    """transformers logs a load report and progress bars; our own checks say what matters."""
    from transformers.utils import logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()

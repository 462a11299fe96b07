"""A computing healing corpus: sentences of FOLDOC, the Free On-line Dictionary of Computing (assets/heal/README.md).

Source: the Debian package dict-foldoc 20230119-1 (FOLDOC of 2023-01-19, Denis Howe, GNU FDL 1.1 or later), its
dictd files foldoc.dict.dz and foldoc.index, unpacked into data/corpora/ by `make corpora` (not installed: the package
pulls a dictionary server). The index gives each entry's offset and length (base64 digits); an entry is its headwords,
then paragraphs: a definition ("<programming> A data structure in which ..."), notes, references in [brackets] and a
date in (parentheses). A sentence is one of a definition's or a note's sentences with the markup taken out
({cross-references} keep their words; (URLs), <addresses>, <subject> labels and a leading (pronunciation) go; one
with an address left is dropped). Kept as the WordNet corpus keeps its own (corpus.keep, then no near duplicate of
either evaluation set), in the order of their sha256.
"""
import gzip
import re
from functools import lru_cache

from ..errors import CompressError
from .corpus import CACHE, cached, keep, unseen

SOURCE = CACHE.parent / "corpora"
FILES = ("foldoc.dict.dz", "foldoc.index")
BUILD = 1  # raise when the sentences made change, so every cache is rebuilt
MAX_ENTRY = 1 << 16  # characters of one entry: the longest is ~30,000
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URL = re.compile(r"\([a-z]+://[^)]*\)|[a-z]+://\S+|\s*<[^<>\s]*@[^<>\s]*>")  # a link, an address <x@y>
_LEAD = re.compile(r"^(<[^>]*>\s*)?(\([^)]*\)\s*)?")  # <subject, subject> ("pronunciation") or (abbreviation)
_SPLIT = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")


def _files():
    paths = [SOURCE / f for f in FILES]
    if not all(p.is_file() for p in paths):
        raise CompressError("heal_text all needs FOLDOC (Debian's dict-foldoc), which is not here: run `make corpora`")
    return paths


def _number(digits: str) -> int:
    n = 0
    for c in digits:
        n = n * 64 + _B64.index(c)
    return n


def entries(data: bytes, index: str):
    """Each entry's text once (several headwords may point at one entry), in the index's order."""
    seen = set()
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1] or not parts[2]:
            continue
        start, length = _number(parts[1]), min(_number(parts[2]), MAX_ENTRY)
        if start not in seen:
            seen.add(start)
            yield data[start:start + length].decode("utf-8", "replace")


def sentences(entry: str) -> list[str]:
    """The sentences of an entry's definitions and notes (the first paragraph is its headwords)."""
    out = []
    for para in re.split(r"\n\s*\n", entry)[1:]:
        p = " ".join(para.split())
        if not p or p[0] in "[(" or (p[0] == "{" and p[-1] == "}"):  # a reference, a date, a lone link
            continue
        p = re.sub(r"\s+([.,;:])", r"\1", _LEAD.sub("", _URL.sub("", p)).replace("{", "").replace("}", ""))
        out += [s for s in (s.strip() for s in _SPLIT.split(p)) if s[-1:] in ".!?" and not set(s) & set('"[]@')]
    return out


def build() -> list[str]:
    dz, index = _files()
    data, seen, candidates = gzip.decompress(dz.read_bytes()), set(), []
    for e in entries(data, index.read_text(encoding="utf-8", errors="replace")):
        for s in sentences(e):
            if keep(s) and (k := s.lower()) not in seen:
                seen.add(k)
                candidates.append(s)
    return unseen(candidates)


@lru_cache(maxsize=1)
def computing_corpus() -> tuple[str, ...]:
    """The corpus: read from data/heal/computing.txt when built from these source files, else built and written."""
    return cached("computing", _files(), BUILD, build, {"foldoc": "dict-foldoc 20230119-1"})

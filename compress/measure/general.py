"""A general English healing corpus: sentences made from WordNet 3.0's glosses (assets/heal/README.md).

Source: the Debian package wordnet-base (Princeton's WordNet 3.0 database; `make wordnet` installs it), its files
/usr/share/wordnet/data.noun, data.verb, data.adj and data.adv. Each synset line ends with ' | ' and its gloss: a
definition, then quoted usage examples. A sentence is an example as written, or a definition made a sentence
("A kill is the destruction of an enemy plane or ship or tank or missile."; "To wreck is to ..."; "Quickly means
..."). Kept: 6-40 words, ASCII, a capital first, no backquotes, once each (ignoring case), and no near duplicate of
either evaluation set (texts.near_duplicates); then SIZE of them, ordered by the sha256 of each sentence (a fixed
shuffle). Built once (~10 s) and cached, with its sha256, in data/heal/ (git-ignored); rebuilt when the source files
or BUILD change.
"""
import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from ..errors import CompressError
from .texts import ASSETS, EVAL_SETS, eval_set, heal_corpus, near_duplicates

WORDNET = Path("/usr/share/wordnet")
PARTS = ("noun", "verb", "adj", "adv")
CACHE = ASSETS.parent / "data" / "heal"
SIZE = 60_000
HEAL_TEXTS = ("styles", "general", "both")  # the recipe's heal_text: which default healing text
BUILD = 2  # raise when the sentences made change, so every cache is rebuilt
_QUOTED = re.compile(r'"([^"]*)"')
_MARKER = re.compile(r"\([a-z]+\)$")  # adjectives' (a), (p), (ip)
_LABEL = re.compile(r"^\([^)]*\)\s*")  # a definition's leading usage label: (law), (used of grass or vegetation)


def _files() -> list[Path]:
    files = [WORDNET / f"data.{p}" for p in PARTS]
    if not all(f.is_file() for f in files):
        raise CompressError("the general healing corpus needs WordNet 3.0 (Debian's wordnet-base), which is not "
                            "installed here: run `make wordnet` (or `apt-get install wordnet-base`)")  # no server path
    return files


def synsets(path: Path):
    """(part of speech, first lemma, definition, examples) of each synset of a data.* file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or " | " not in line:  # the licence header
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            lemma = _MARKER.sub("", fields[4]).replace("_", " ")
            examples = _QUOTED.findall(gloss)
            definition = _LABEL.sub("", _QUOTED.sub("", gloss).strip(" ;:,-\n"))
            yield fields[2], lemma, definition, examples


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip(" ;:,")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def sentences(pos: str, lemma: str, definition: str, examples: list[str]) -> list[str]:
    """The examples as they are, and the definition as a sentence about its lemma."""
    out = [_sentence(e) for e in examples]
    if definition and ";" not in definition:  # several definitions in one gloss read badly as one sentence
        if pos == "n":
            article = "" if lemma[0].isupper() else "an " if lemma[0] in "aeiou" else "a "
            out.append(_sentence(f"{article}{lemma} is {definition}"))
        elif pos == "v":
            out.append(_sentence(f"to {lemma} is to {definition}"))
        else:
            out.append(_sentence(f"{lemma} means {definition}"))
    return out


def _keep(s: str) -> bool:
    return 6 <= len(s.split()) <= 40 and s.isascii() and s[0].isupper() and "--" not in s and "`" not in s


def source_sha256() -> str:
    """Of the four source files and BUILD: the cache's key."""
    h = hashlib.sha256(str(BUILD).encode())
    for f in _files():
        h.update(f.read_bytes())
    return h.hexdigest()


def build(size: int = SIZE) -> list[str]:
    """The corpus, made from the source files (no cache)."""
    seen, candidates = set(), []
    for f in _files():
        for syn in synsets(f):
            for s in sentences(*syn):
                if _keep(s) and (k := s.lower()) not in seen:
                    seen.add(k)
                    candidates.append(s)
    candidates.sort(key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    evals = [t for name in EVAL_SETS for t in eval_set(name)[0] + eval_set(name)[2]]
    out = []
    for i in range(0, len(candidates), size):  # in hash order, chunk by chunk, until there are enough
        chunk = candidates[i:i + size]
        out += [s for s, dup in zip(chunk, near_duplicates(chunk, evals)) if not dup]
        if len(out) >= size:
            break
    return out[:size]


def sha256(texts) -> str:
    """As healing hashes its texts (heal.HealResult.corpus_sha256): newline-joined."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def general_corpus() -> tuple[str, ...]:
    """The general healing corpus: read from data/heal/general.txt when built from these source files, else built
    and written there (atomically: processes may build it at once)."""
    key = source_sha256()
    text, meta = CACHE / "general.txt", CACHE / "general.json"
    try:
        info = json.loads(meta.read_text())
        lines = tuple(text.read_text(encoding="utf-8").splitlines())
        if info.get("source") == key and sha256(lines) == info.get("sha256"):
            return lines
    except (OSError, ValueError):
        pass
    lines = tuple(build())
    CACHE.mkdir(parents=True, exist_ok=True)
    for path, body in ((text, "".join(s + "\n" for s in lines)),
                       (meta, json.dumps({"source": key, "sha256": sha256(lines), "sentences": len(lines),
                                          "wordnet": str(WORDNET), "build": BUILD}, indent=1))):
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
    return lines


def healing_text(which: str = "styles") -> list[str]:
    """The default healing text of encoders: styles (texts.heal_corpus), general (this corpus) or both, interleaved
    evenly (each text placed at its fraction of its own list, so both run through the whole of the other)."""
    if which not in HEAL_TEXTS:
        raise CompressError(f"heal_text must be one of {', '.join(HEAL_TEXTS)}, got {which!r}")
    if which != "both":
        return list(heal_corpus() if which == "styles" else general_corpus())
    a, b = heal_corpus(), general_corpus()
    placed = [(i / len(a), 0, t) for i, t in enumerate(a)] + [(i / len(b), 1, t) for i, t in enumerate(b)]
    return [t for _, _, t in sorted(placed, key=lambda x: x[:2])]

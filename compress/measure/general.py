"""A general English healing corpus: sentences made from WordNet 3.0's glosses (assets/heal/README.md).

Source: the Debian package wordnet-base (Princeton's WordNet 3.0 database; `make wordnet` installs it), its files
/usr/share/wordnet/data.noun, data.verb, data.adj and data.adv. Each synset line ends with ' | ' and its gloss: a
definition, then quoted usage examples. A sentence is an example as written, or a definition made a sentence
("A kill is the destruction of an enemy plane or ship or tank or missile."; "To wreck is to ..."; "Quickly means
..."). Kept: 6-40 words, ASCII, a capital first, no backquotes, once each (ignoring case), and no near duplicate of
either evaluation set (texts.near_duplicates); then SIZE of them, ordered by the sha256 of each sentence (a fixed
shuffle). Built once (~2 s) and cached, with its sha256, in data/heal/ (corpus.py); rebuilt when the source files
or BUILD change. healing_text: the recipe's heal_text, this corpus with the others.
"""
import re
from functools import lru_cache
from pathlib import Path

from ..errors import CompressError
from .computing import computing_corpus
from .corpus import cached, keep, sha256, unseen
from .texts import heal_corpus

WORDNET = Path("/usr/share/wordnet")
PARTS = ("noun", "verb", "adj", "adv")
SIZE = 60_000
HEAL_TEXTS = ("styles", "general", "both", "all")  # the recipe's heal_text: which default healing text
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


def build(size: int = SIZE) -> list[str]:
    """The corpus, made from the source files (no cache)."""
    seen, candidates = set(), []
    for f in _files():
        for syn in synsets(f):
            for s in sentences(*syn):
                if keep(s) and (k := s.lower()) not in seen:
                    seen.add(k)
                    candidates.append(s)
    return unseen(candidates, size)


@lru_cache(maxsize=1)
def general_corpus() -> tuple[str, ...]:
    """The general healing corpus: read from data/heal/general.txt when built from these source files, else built."""
    return cached("general", _files(), BUILD, build, {"wordnet": str(WORDNET)})


def healing_text(which: str = "styles") -> list[str]:
    """The default healing text of encoders: styles (texts.heal_corpus), general (this corpus), both, or all (both and
    FOLDOC's computing sentences, computing.py), interleaved evenly (each text placed at its fraction of its own list,
    so each runs through the whole of the others)."""
    if which not in HEAL_TEXTS:
        raise CompressError(f"heal_text must be one of {', '.join(HEAL_TEXTS)}, got {which!r}")
    parts = {"styles": [heal_corpus], "general": [general_corpus], "both": [heal_corpus, general_corpus],
             "all": [heal_corpus, general_corpus, computing_corpus]}[which]
    lists = [part() for part in parts]
    if len(lists) == 1:
        return list(lists[0])
    placed = [(i / len(texts), k, t) for k, texts in enumerate(lists) for i, t in enumerate(texts)]
    return [t for _, _, t in sorted(placed, key=lambda x: x[:2])]

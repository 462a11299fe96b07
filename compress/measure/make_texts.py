"""Builds the texts the project did not write, from documentation that ships with Python and with the packages in
requirements.txt, and writes them to assets/ (committed: package texts change between versions):

  assets/eval/docs.tsv, docs_queries.txt  the second evaluation set: sentences of the CPython standard library's
      docstrings (PSF License 2.0), a few per module over ~100 modules of every kind (mail, networking, files,
      numbers, GUIs, concurrency...), and one summary sentence per module as a query. Never healed on.
  assets/heal/reference.txt  healing text: sentences of Python's language reference (pydoc_data.topics, PSF).
  assets/heal/api.txt        healing text: sentences of numpy, scipy and pandas docstrings (BSD-3-Clause).

Healing text that shares most of its word 4-grams with any evaluation sentence (of either set) is dropped, so
the evaluation stays text the healed model never saw. Run: python -m compress.measure.make_texts (Python 3.11 here).
"""
import importlib
import inspect
import random
import re
import sys

from .texts import ASSETS, eval_set, near_duplicates

EVAL_MODULES = [
    "argparse", "asyncio", "base64", "bisect", "calendar", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "curses", "datetime", "decimal", "difflib", "dis", "email.message",
    "email.utils", "enum", "fnmatch", "fractions", "ftplib", "functools", "getpass", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html.parser", "http.client", "http.cookies", "http.server", "imaplib", "inspect",
    "ipaddress", "itertools", "json", "locale", "logging", "lzma", "mailbox", "math", "mimetypes", "multiprocessing",
    "numbers", "operator", "os", "pathlib", "pickle", "platform", "poplib", "pprint", "queue", "random", "re",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver",
    "sqlite3", "ssl", "statistics", "string", "struct", "subprocess", "sysconfig", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tkinter", "tokenize", "trace", "traceback", "turtle", "types", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "venv", "warnings", "wave", "weakref", "webbrowser",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib", "zoneinfo"]
API_MODULES = ["numpy", "numpy.linalg", "numpy.random", "numpy.fft", "scipy.stats", "scipy.optimize", "scipy.signal",
               "scipy.sparse", "scipy.interpolate", "scipy.linalg", "pandas"]
PER_MODULE = 7  # evaluation sentences per standard-library module (after its one or two queries)
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE = re.compile(r"[{}\[\]=<>|`*\\#@$~^_]|>>>|::|\.\.\.|https?:|\(\)")


def sentences(text: str):
    """Prose sentences of a docstring: 7-40 words, a capital start and a full stop, no code or markup."""
    for para in re.sub(r"[ \t]+", " ", text).split("\n\n"):
        for s in _SPLIT.split(" ".join(para.split())):
            if 7 <= len(s.split()) <= 40 and s[0].isupper() and s.endswith(".") and s.isascii() \
                    and not _CODE.search(s) and s.count("(") + s.count(")") <= 2:
                yield s


def docstrings(mod) -> list[str]:
    """The module's, and those of its public classes, functions and methods defined there, in name order."""
    out = [inspect.getdoc(mod)]
    for name, o in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(o, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(o) or inspect.isfunction(o):
            out.append(inspect.getdoc(o))
            if inspect.isclass(o):
                out += [inspect.getdoc(m) for n, m in sorted(vars(o).items()) if not n.startswith("_")
                        and inspect.isfunction(m)]
    return [d for d in out if d]


def module_sentences(name: str) -> list[str]:
    mod = importlib.import_module(name)
    return list(dict.fromkeys(s for d in docstrings(mod) for s in sentences(d)))


def main():
    rng = random.Random(0)
    rows, queries, used = [], [], set()
    for name in EVAL_MODULES:
        ss = [s for s in module_sentences(name) if s not in used]  # a docstring inherited by two modules: once
        rng.shuffle(ss)
        q = 2 if len(ss) >= 12 else 1 if len(ss) >= 3 else 0  # a query needs sentences of its module to find
        queries += ss[:q]
        rows += [(s, name) for s in ss[q:q + PER_MODULE]] if q else []
        used.update(ss[:q + PER_MODULE] if q else [])
    evals = [s for s, _ in rows] + queries
    evals += eval_set("project")[0] + eval_set("project")[2]  # the project's own set too
    from pydoc_data.topics import topics
    reference = list(dict.fromkeys(s for t in sorted(topics) for s in sentences(topics[t])))
    api = list(dict.fromkeys(s for m in API_MODULES for s in module_sentences(m)))
    keep = lambda texts: [t for t, dup in zip(texts, near_duplicates(texts, evals)) if not dup]  # noqa: E731
    reference, api = keep(reference), keep(api)
    out = ASSETS / "eval"
    with open(out / "docs.tsv", "w", encoding="utf-8") as f:
        f.write("sentence\ttopic\n" + "".join(f"{s}\t{t}\n" for s, t in rows))
    (out / "docs_queries.txt").write_text("".join(q + "\n" for q in queries), encoding="utf-8")
    (ASSETS / "heal" / "reference.txt").write_text("".join(s + "\n" for s in reference), encoding="utf-8")
    (ASSETS / "heal" / "api.txt").write_text("".join(s + "\n" for s in api), encoding="utf-8")
    print(f"Python {sys.version.split()[0]}: docs set {len(rows)} sentences, {len(queries)} queries; healing text "
          f"reference {len(reference)}, api {len(api)} sentences", file=sys.stderr)


if __name__ == "__main__":
    main()

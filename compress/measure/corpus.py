"""What the built healing corpora share (general.py's WordNet, computing.py's FOLDOC): the sentence filter, the order
and the evaluation sets kept out, and the cache in data/heal/ (git-ignored) keyed by the source files' sha256."""
import hashlib
import json
import os

from .texts import ASSETS, EVAL_SETS, eval_set, near_duplicates

CACHE = ASSETS.parent / "data" / "heal"


def keep(s: str) -> bool:
    return 6 <= len(s.split()) <= 40 and s.isascii() and s[0].isupper() and "--" not in s and "`" not in s


def unseen(candidates: list[str], size: int | None = None) -> list[str]:
    """The first `size` of the candidates in the order of their sha256 (a fixed shuffle) that are no near duplicate of
    either evaluation set (checked chunk by chunk, until there are enough)."""
    candidates = sorted(candidates, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    evals = [t for name in EVAL_SETS for t in eval_set(name)[0] + eval_set(name)[2]]
    size, out = size or len(candidates), []
    for i in range(0, len(candidates), size):
        chunk = candidates[i:i + size]
        out += [s for s, dup in zip(chunk, near_duplicates(chunk, evals)) if not dup]
        if len(out) >= size:
            break
    return out[:size]


def sha256(texts) -> str:
    """As healing hashes its texts (heal.HealResult.corpus_sha256): newline-joined."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def cached(name: str, sources, build: int, make, about: dict) -> tuple[str, ...]:
    """A corpus read from data/heal/<name>.txt when <name>.json says it was made from these source files by this
    `build` of its code, else made and written there (atomically: processes may build it at once)."""
    h = hashlib.sha256(str(build).encode())
    for f in sources:
        h.update(f.read_bytes())
    key = h.hexdigest()
    text, meta = CACHE / f"{name}.txt", CACHE / f"{name}.json"
    try:
        info = json.loads(meta.read_text())
        lines = tuple(text.read_text(encoding="utf-8").splitlines())
        if info.get("source") == key and sha256(lines) == info.get("sha256"):
            return lines
    except (OSError, ValueError):
        pass
    lines = tuple(make())
    CACHE.mkdir(parents=True, exist_ok=True)
    for path, body in ((text, "".join(s + "\n" for s in lines)),
                       (meta, json.dumps({"source": key, "sha256": sha256(lines), "sentences": len(lines),
                                          **about, "build": build}, indent=1))):
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
    return lines

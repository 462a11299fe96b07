"""The metrics: ONE table (METRICS) of everything a compressed model is measured on, as the technique table is of
what it is made of. Per metric: its name, how its value is read from a measured side (measurement.Side.to_dict(),
against the original's) or measured on its own, its direction, label and unit, which tasks and which workloads have
it. The JSON of `apply`, the app's page, the stored row, the sweeps' objectives and constraints (sweep/space.py), the
frontier, the downloaded card and the HTML report read it: a new metric is one entry here."""
import os
from dataclasses import dataclass
from typing import Callable

from .evaluate import batches, metric_label
from ..errors import CompressError

TASKS = ("embedding", "generation")
WORKLOADS = ("ids", "passages", "sentences")


def has_shape(kind: str) -> bool:
    """A batch x seq workload (ids, passages); "sentences" has the evaluation sentences' own shapes."""
    return kind != "sentences"

KINDS = ("quality", "size", "speed", "memory")


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str                  # "maximize" or "minimize"
    about: str                      # what it is, in words (a sweep's help and its errors)
    kind: str = "quality"           # KINDS: quality (evaluate.quality's keys), size, speed (timed), memory
    label: str = ""                 # axis and column title ("" = evaluate.metric_label: the set it was measured on)
    unit: str = ""
    value: Callable | None = None   # (side, original side) -> value, sides as Side.to_dict(); None: quality[name]
    tasks: tuple = TASKS            # bundle.task values that have it
    workloads: tuple = WORKLOADS    # latency workloads that have it
    has: Callable | None = None     # bundle -> bool: this model has it (an adapter's own metric, a bundled model)
    measure: Callable | None = None  # (bundle, workload dict) -> value: measured on its own, per side, into the
    #                                   side's dict under its name (Side.extra); None: read from what is measured
    every: bool = True              # measured by every measure() (False: costly, where asked: the CLI, a sweep)
    count: Callable | None = None   # a rate: (bundle, the timed batches of texts) -> how many of its units

    @property
    def title(self) -> str:
        return self.label or metric_label(self.name)

    @property
    def timed(self) -> bool:
        return self.kind == "speed"

    def of(self, side: dict, original: dict):
        """Its value on a measured side (None where it was not measured)."""
        if self.value is None:
            return (side.get("quality") or {}).get(self.name) if self.measure is None else side.get(self.name)
        try:
            return self.value(side, original)
        except (KeyError, TypeError):  # not timed (no latency_ms), or not measured
            return None

    def available(self, bundle, workload: str = "ids") -> bool:
        return bundle.task in self.tasks and workload in self.workloads and (self.has is None or self.has(bundle))


def _p50(s: dict) -> float:
    return s["latency_ms"]["p50"]


def _quality(name, direction, about, tasks, **kw) -> Metric:
    return Metric(name, direction, about, "quality", tasks=tasks, **kw)


def _own_quality(name: str) -> Callable:  # an adapter's own quality key (TinyGPT's bits per character)
    return lambda b: name in b.adapter.extra_metrics


ENC, DEC = ("embedding",), ("generation",)
_TABLE = [
    _quality("fidelity", "maximize", "mean cosine of compressed vs original mean-pooled sentence embeddings, on "
             "held-out sentences written by this project", ENC),
    _quality("fidelity_docs", "maximize", "the same on held-out sentences of Python's standard-library docstrings "
             "(text we did not write)", ENC),
    _quality("retrieval_overlap", "maximize", "top-5 search results in common with the original, the project's "
             "sentences as queries", ENC),
    _quality("retrieval_overlap_docs", "maximize", "the same on the Python docstrings", ENC),
    _quality("bits_per_char", "minimize", "held-out bits per character on the last 10% of pydoc_data.topics "
             "(TinyGPT; lower is better)", DEC, has=_own_quality("bits_per_char")),
    _quality("bits_per_byte", "minimize", "held-out bits per UTF-8 byte on the last 10% of pydoc_data.topics, as "
             "its card (the bundled TinyLlama; lower is better)", DEC, has=_own_quality("bits_per_byte"),
             unit="bits/byte"),
    _quality("bits_per_token", "minimize", "held-out bits per token of the evaluation sentences (Hugging Face "
             "decoders; per token of the model's own tokenizer)", DEC, has=_own_quality("bits_per_token"),
             unit="bits/token"),
    _quality("next_token_kl", "minimize", "KL(original || compressed) of the next token, nats/token", DEC,
             unit="nats/token"),
    _quality("top1_agreement", "maximize", "share of next tokens the original and the compressed model both rank "
             "first", DEC),
    Metric("size_mb", "minimize", "serialized size, MB", "size", "size (MB)", "MB",
           lambda s, o: round(s["size_bytes"] / 1e6, 4)),
    Metric("size_bytes", "minimize", "serialized size, bytes", "size", "size (bytes)", "bytes",
           lambda s, o: s["size_bytes"]),
    Metric("params", "minimize", "parameters", "size", "parameters", "", lambda s, o: s["params"]),
    Metric("x_smaller", "maximize", "original size / compressed size", "size", "x smaller than the original", "x",
           lambda s, o: round(o["size_bytes"] / s["size_bytes"], 3)),
    Metric("latency_ms", "minimize", "median latency on the workload, ms", "speed", "latency p50 (ms)", "ms",
           lambda s, o: _p50(s)),
    Metric("speedup", "maximize", "original p50 / compressed p50, timed in the same trial", "speed",
           "x faster than the original", "x", lambda s, o: round(_p50(o) / _p50(s), 3)),
    Metric("sentences_per_s", "maximize", "sentences per second on the real-sentences workload (encoders)", "speed",
           "sentences/s", "sentences/s", lambda s, o: s["latency_ms"]["sentences_per_s"], ENC, ("sentences",),
           count=lambda b, timed: sum(map(len, timed))),
    Metric("tokens_per_s", "maximize", "tokens per second on the real-sentences workload (decoders)", "speed",
           "tokens/s", "tokens/s", lambda s, o: s["latency_ms"]["tokens_per_s"], DEC, ("sentences",),
           count=lambda b, timed: sum(int(batches(b, g, 32)[0][1].sum()) for g in timed)),
]


def peak_rss_rise_mb(bundle, ids, mask) -> float:
    """In a fresh process (fresh.py), the model loaded and its input built: the rise of the process's peak RSS
    (VmHWM) over its RSS during ONE forward call, the first (lazy one-time allocations count: the call needs them).
    Freed heap is returned first (malloc_trim) and the peak reset (/proc/self/clear_refs 5), so that nothing loading
    allocated hides the rise."""
    import ctypes
    import gc
    import re
    import torch
    from ..models.adapters import forward

    def kb(key):
        return int(re.search(rf"{key}:\s+(\d+) kB", open("/proc/self/status").read())[1])
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = kb("VmRSS")
    with torch.no_grad():
        forward(bundle.model, bundle.adapter, ids, mask)
    return round((kb("VmHWM") - before) / 1024, 1)


def _peak_mem_mb(bundle, workload: dict) -> float:
    from . import fresh
    return fresh.run(bundle, peak_rss_rise_mb, workload, env={"MALLOC_MMAP_THRESHOLD_": "131072"})  # fixed: freed
    #                                                 large buffers go back to the OS, not kept resident by glibc


_TABLE.append(Metric(
    "peak_mem_mb", "minimize", "rise of peak RSS during one forward call on the workload's first batch, in a fresh "
    "process (the model by name + recipe replay), MB", "memory", "peak memory of a call (MB)", "MB",
    has=lambda b: os.path.exists("/proc/self/clear_refs") and fresh_reachable(b), measure=_peak_mem_mb, every=False))


def fresh_reachable(bundle) -> bool:
    from .fresh import reachable
    return reachable(bundle)


METRICS: dict[str, Metric] = {m.name: m for m in _TABLE}
RATES = tuple(m.name for m in _TABLE if m.count is not None)


def rate_for(bundle) -> Metric:
    """The real-sentences rate of this model (sentences_per_s for encoders, tokens_per_s for decoders): chosen here."""
    return next(m for m in METRICS.values() if m.count is not None and bundle.task in m.tasks)


def names_for(bundle, workload: str = "ids") -> list[str]:
    """The metric names this model has on this workload, in table order."""
    return [n for n, m in METRICS.items() if m.available(bundle, workload)]


def own(names=None) -> list[Metric]:
    """The metrics measured on their own (Metric.measure): names None = those every measurement takes, "all" = all,
    else the ones named (a name, or names: one not of the table is one CompressError line)."""
    mine = [m for m in METRICS.values() if m.measure is not None]
    if names is None or names == "all":
        return [m for m in mine if names == "all" or m.every]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, (list, tuple, set)):
        raise CompressError(f"metrics are None, 'all' or names, got {type(names).__name__}")
    if bad := [n for n in names if n not in METRICS]:
        raise CompressError(f"unknown metric {str(bad[0])[:60]!r}; the metrics table has {', '.join(METRICS)}")
    return [m for m in mine if m.name in names]


def quality_words(bundle) -> str:
    """What this model's quality numbers are, in words (the Model and Compress pages, the card, the report): the
    table's words for each quality metric it has, then the model's own note (its card's held-out number, no
    tokenizer) from bundle.info["metric_note"]."""
    words = "; ".join(f"{m.name}: {m.about}" for m in METRICS.values() if m.kind == "quality" and m.available(bundle))
    note = bundle.info.get("metric_note")
    return words + (f" ({note})" if note else "")


def label(name: str) -> str:
    """A metric's title (the table's), or a quality key's words (evaluate.metric_label) for keys outside it."""
    return METRICS[name].title if name in METRICS else metric_label(name)


def values(side: dict, original: dict, names=None) -> dict:
    """{metric: value} of a measured side against the original's, for the metrics measured (and named)."""
    return {n: v for n, m in METRICS.items() if (names is None or n in names) and (v := m.of(side, original)) is not None}

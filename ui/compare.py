"""Original vs compressed, readable at every width: side by side (a column of metrics each) on a wide screen, one
compact table (measure | original | compressed | change) on a phone, where Streamlit stacks the two columns one under
the other and they are no longer a comparison. Both are drawn; the shell's style shows one by the screen's width
(NARROW: the keyed containers' classes)."""
import pandas as pd
import streamlit as st

import compress as C
from compress.measure import metrics
from ui import cached, guide

# below this width Streamlit stacks columns: the table shows, the columns hide (ui/shell.py's STYLE)
NARROW = """@media (max-width: 640px) { .st-key-cmp_wide { display: none !important; } }
@media (min-width: 641px) { .st-key-cmp_narrow { display: none !important; } }"""


def change(x: float, better: str, worse: str) -> dict:
    """A ratio as the badge says it, '4.00x smaller' or '2.50x larger', and which way its arrow points (no minus: a
    "-1.15x slower" read as a double negative)."""
    return {"change": guide.ratio(x, better, worse), "arrow": "up" if x >= 1 else "down"}


def rows(res) -> list[dict]:
    """Each measure of the last Apply: its label, the original's and the compressed model's value, the change."""
    o, c, lo, lc, gpu = (res["nums"]["original"], res["nums"]["compressed"], res["lat"]["original"],
                         res["lat"]["compressed"], res["gpu"])
    out = [{"measure": "Size", "Original": cached.mb(o["size_bytes"]), "Compressed": cached.mb(c["size_bytes"]),
            **change(o["size_bytes"] / c["size_bytes"], "smaller", "larger")},
           {"measure": "Params", "Original": f"{o['params'] / 1e6:.2f} M", "Compressed": f"{c['params'] / 1e6:.2f} M"},
           {"measure": "CPU latency p50", "Original": f"{lo['p50']:.1f} ms", "Compressed": f"{lc['p50']:.1f} ms",
            **change(lo["p50"] / lc["p50"], "faster", "slower")}]
    out += [{"measure": metrics.label(k), "Original": f"{lo[k]:,.0f}", "Compressed": f"{lc[k]:,.0f}",
             "change": f"{lc[k] / lo[k]:.2f}x"} for k in metrics.RATES if k in lc]  # the model's rate
    out += [{"measure": m.title, "help": m.about, **{side: f"{n[m.name]:,.1f} {m.unit}" if n.get(m.name) is not None
                                                      else "n/a" for side, n in (("Original", o), ("Compressed", c))}}
            for m in metrics.own("all") if o.get(m.name) is not None or c.get(m.name) is not None]
    if gpu is not None:
        out.append({"measure": "GPU latency p50", **{s: f"{gpu[s.lower()]['p50']:.1f} ms" if s.lower() in gpu
                                                     else "n/a: int8 is CPU-only" for s in ("Original", "Compressed")}})
    out += [{"measure": C.metric_label(k), **{side: f"{n['quality'][k]:.4f}" if k in n["quality"] else "n/a"
                                              for side, n in (("Original", o), ("Compressed", c))}}
            for k in dict.fromkeys([*o["quality"], *c["quality"]])]  # encoders: each set named
    return out


def notes(res, side: str) -> list[str]:
    """The small print under a side: its latency spread, GPU, what healing did, its size breakdown."""
    n, lat = res["nums"][side], res["lat"][side]
    out = [f"p10-p90: {lat['p10']:.1f}-{lat['p90']:.1f} ms over {lat['runs']} runs"
           + (" (a batch of up to 32 sentences each, tokenization included)"
              if not metrics.has_shape(res["workload"]["kind"]) else "")]
    if res["gpu"] is None:
        out.append("GPU latency: no GPU on this machine")
    if side == "compressed" and "unhealed" in res["nums"]:
        out.append("before healing: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}"
                                                  for k, v in res["nums"]["unhealed"]["quality"].items())
                   + guide.heal_line(res["applied"].get("heal"), res["recipe"].heal_steps))
    out.append("size breakdown: " + ", ".join(f"{k} {cached.mb(v)}" for k, v in n["size_breakdown"].items()))
    return out


def show(res) -> None:
    """Both layouts of the comparison (one shows, by the screen's width)."""
    table = rows(res)
    with st.container(key="cmp_wide"):
        for col, side in zip(st.columns(2), ("Original", "Compressed")):
            col.markdown(f"**{side}**")
            for r in table:
                col.metric(r["measure"], r[side], r.get("change") if side == "Compressed" else None,
                           delta_color="off", delta_arrow=r.get("arrow", "auto"), help=r.get("help"))
            for line in notes(res, side.lower()):
                col.caption(line)
    with st.container(key="cmp_narrow"):
        st.table(pd.DataFrame(table, columns=["measure", "Original", "Compressed", "change"]).fillna("")
                 .set_index("measure"))
        st.caption("Compressed: " + "; ".join(notes(res, "compressed")))

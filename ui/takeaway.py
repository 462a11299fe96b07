"""What a demo ends with: the compressed model as one zip (prepared on the job queue), and the one-file HTML report
of what the page shows (built from the page's numbers: nothing is measured again)."""
import functools
import re

import streamlit as st

import compress as C
from compress.bench import seqlen
from compress.outputs import html as htmlreport
from ui import cached, jobs


def _name(b, recipe) -> str:
    base = b.name if b.name in C.BUNDLED else "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base}-{recipe.describe()}")[:80].strip("-")


def measured(res) -> dict:
    """The page's numbers in the shape card.json reads (pipeline.report's)."""
    return {"workload": res["workload"], **{k: {**res["nums"][k], "latency_ms": res["lat"][k]}
                                             for k in ("original", "compressed")}}


def report_html(b, res, samples, curve=None) -> str:
    """The report (no streamlit calls: the download button builds it when clicked, outside the script's run); curve:
    the attention variant's cost over T the page timed, if it is this recipe's (timed())."""
    recipe = res["recipe"]
    shown = samples.get("_key") == (cached.model_key(b), recipe.to_json())
    cmd = " ".join(["python -m compress report --model", b.name if b.name in C.BUNDLED else "PATH_OF_THE_ORIGINAL",
                    *recipe.to_cli(), "--out report.html"])
    return htmlreport.comparison({"name": b.name if b.name in C.BUNDLED else b.info.get("architecture", "model"),
                                  "info": b.info, "content_hash": b.content_hash,
                                  "quality": C.quality_words(b)}, res, res.get("peer"),
                                 {k: v for k, v in samples.items() if k != "_key"} if shown else None, cmd,
                                 C.machine_line(), curve)


def timed(b, recipe, got) -> dict | None:
    """The page's cost-over-T curve (session_state.seqlen) when it is of this model and this recipe's attention."""
    if recipe.attention == "none" or not isinstance(got, dict):
        return None
    return got if got.get("key", ())[:2] == (cached.model_key(b), seqlen.attention_only(recipe).to_json()) else None


def section(b, res):
    st.subheader("Take it away")
    recipe, key = res["recipe"], (cached.model_key(b), res["recipe"].to_json())
    c1, c2 = st.columns(2)
    z = st.session_state.get("zip")
    if z is None or z["key"] != key:
        if c1.button("Prepare the compressed model (.zip)", key="zip_prepare") or jobs.waiting("export", key):
            mine = cached.session_model(b, recipe)

            def fn(job):  # on the queue: a cache miss compresses, then the weights are serialized
                comp = mine or C.compressed_model(b, recipe)
                return C.zip_bytes(comp, measured(res)), res["nums"]["compressed"]["size_bytes"]
            got = jobs.run("export", fn, f"{b.name}: zip of {recipe.describe()}", key=key)
            if got is not None:
                st.session_state.zip = z = {"key": key, "data": got[0], "model_bytes": got[1]}
    if z is not None and z["key"] == key:
        c1.download_button(f"Download {_name(b, recipe)}.zip", z["data"], file_name=f"{_name(b, recipe)}.zip",
                           mime="application/zip", key="zip_download", on_click="ignore")  # (no rerun: it
        #  would redraw the report's button while the user reaches for it)
        c1.caption(f"zip {len(z['data']) / 1e6:.2f} MB (deflated); the model's card size {z['model_bytes'] / 1e6:.2f} "
                   "MB, its weights as the app measures them. Beside them: card.json, recipe.json, a README and the "
                   "tokenizer where the model has one. Upload it back in the sidebar to "
                   "compare it with its original again; `compress.load_compressed('file.zip')` loads it in Python.")
    samples, curve = dict(st.session_state.get("samples") or {}), timed(b, recipe, st.session_state.get("seqlen"))
    c2.download_button("Download the report (.html)", functools.partial(report_html, b, res, samples, curve),
                       file_name=f"{_name(b, recipe)}-report.html", mime="text/html", key="report_download",
                       on_click="ignore")
    c2.caption("One self-contained file (opens offline): the numbers above, the peer, the recipe"
               + (", the per-layer report" if res.get("layers") else "")
               + (", the cost over sequence length" if curve else "")
               + " and the sample outputs"
               + ("" if res.get("peer") else " (the peer was not measured: turn on 'Also measure the peer' and Apply)")
               + ".")

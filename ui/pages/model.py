"""Model card: what the active model is, how big, and how its quality will be measured."""
import pandas as pd
import streamlit as st

import compress as C
from ui import cached, safe, shell

b = shell.page()
st.title(f"Model: {b.name}")
st.page_link("ui/pages/compress.py", label="Start here: Compress. Pick a preset (or move a slider), press Apply, "
             "and see original and compressed side by side", icon=":material/arrow_forward:")
n = cached.sizes(b)
if n is None:  # cancelled or failed: said in one line above
    st.stop()
cols = st.columns(5)
cols[0].metric("Architecture", b.info["architecture"])
kv = b.info.get("kv_heads", b.info["heads"])  # grouped-query attention: fewer key/value heads than query heads
cols[1].metric("Layers x heads", f"{b.info['layers']} x {b.info['heads']}",
               help=f"{b.info['heads']} query heads share {kv} key/value heads" if kv != b.info["heads"] else None)
cols[2].metric("Hidden size", b.info["hidden"])
cols[3].metric("Params", f"{n['params'] / 1e6:.2f} M")
cols[4].metric("Size", cached.mb(n["size_bytes"]))
st.dataframe(pd.DataFrame({"part": list(n["size_breakdown"]),
                           "size (MB)": [round(v / 1e6, 2) for v in n["size_breakdown"].values()]}),
             hide_index=True)
st.markdown(f"**Task:** {b.task}  \n**Quality metrics:** {safe.plain(C.quality_words(b))}  \n"
            f"**Weights:** {b.info.get('dtype', 'float32')}  \n"
            f"**Source:** {b.info['source']}  \n**Content hash:** `{b.content_hash[:16]}`")
if b.info.get("note"):
    st.warning(safe.plain(b.info["note"]))  # (it may quote the upload's files)
st.caption(f"Measured on {C.cpu_info()['cpu']} ({C.cpu_info()['threads']} threads). Size = bytes of the "
           "serialized state dict; each part serialized on its own.")

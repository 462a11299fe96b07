"""Router: page config, the sidebar model picker shared by all pages (ui/shell.py), navigation."""
import streamlit as st

from ui import safe, shell

st.set_page_config(page_title="Transformer compression explorer", layout="wide",
                   page_icon="assets/icon.png")  # local: a page's material icon fetched its SVG from fonts.gstatic.com
safe.guard(shell.setup, "the sidebar")
nav = st.navigation([st.Page("ui/pages/model.py", title="Model", icon=":material/description:", default=True),
                     st.Page("ui/pages/spectra.py", title="Spectra", icon=":material/show_chart:"),
                     st.Page("ui/pages/compress.py", title="Compress", icon=":material/compress:"),
                     st.Page("ui/pages/tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
                     st.Page("ui/pages/learn.py", title="Learn", icon=":material/school:")])
shell.run(nav)

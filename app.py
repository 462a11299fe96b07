"""Router: page config, the sidebar model picker shared by all pages (pages/shell.py), navigation."""
import streamlit as st

from pages import safe, shell

st.set_page_config(page_title="Transformer compression explorer", layout="wide")
safe.guard(shell.setup, "the sidebar")
nav = st.navigation([st.Page("pages/model.py", title="Model", icon=":material/description:", default=True),
                     st.Page("pages/spectra.py", title="Spectra", icon=":material/show_chart:"),
                     st.Page("pages/compress.py", title="Compress", icon=":material/compress:"),
                     st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
                     st.Page("pages/learn.py", title="Learn", icon=":material/school:")])
shell.run(nav)

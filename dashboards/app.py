"""Entry point of the ctxsim dashboard: ``ctxsim dashboard`` or ``streamlit run dashboards/app.py``."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="ctxsim", layout="wide")
navigation = st.navigation(
    [
        st.Page(PAGES / "design.py", title="Design explorer", url_path="design", default=True),
        st.Page(PAGES / "compare.py", title="Compare", url_path="compare"),
        st.Page(PAGES / "deploy.py", title="Deployment sizing", url_path="deploy"),
        st.Page(PAGES / "calibration.py", title="Calibration", url_path="calibration"),
    ]
)
navigation.run()

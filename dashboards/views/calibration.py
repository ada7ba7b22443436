"""Placeholder until the page is written."""

import streamlit as st

from dashboards.state import init_session

init_session()
st.title("calibration")
st.info("This page is not written yet.")

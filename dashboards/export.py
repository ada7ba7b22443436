"""Rendering with exports: tables as CSV and JSON, charts as PNG, specs and plans as YAML.

Also the one place where pages show bad input: ``show_error`` prints it on the page, so a
wrong upload or an impossible plan never reaches the user as a traceback.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import pandas as pd
import streamlit as st
import yaml

from ctxsim.spec import SpecError

log = logging.getLogger(__name__)


def table(df: pd.DataFrame, name: str, key: str, caption: str | None = None) -> None:
    """Show ``df`` with CSV and JSON download buttons; ``name`` is the file stem.

    On screen, fractional numbers show in compact form (744B) and integers with thousands
    separators; the downloads keep every digit.
    """
    formats = {}
    for column in df.columns:
        if pd.api.types.is_bool_dtype(df[column]):
            continue
        if pd.api.types.is_integer_dtype(df[column]):
            formats[column] = st.column_config.NumberColumn(format="localized")
        elif pd.api.types.is_float_dtype(df[column]):
            formats[column] = st.column_config.NumberColumn(format="compact")
    st.dataframe(df, hide_index=True, key=f"{key}_table", column_config=formats)
    if caption:
        st.caption(caption)
    left, right, _ = st.columns([1, 1, 6])
    left.download_button(
        "CSV", df.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv", key=f"{key}_csv", on_click="ignore"
    )
    right.download_button(
        "JSON",
        df.to_json(orient="records", indent=1),
        file_name=f"{name}.json",
        mime="application/json",
        key=f"{key}_json",
        on_click="ignore",
    )


def chart(figure, name: str, key: str) -> None:
    """Show a chart from ``dashboards.charts`` with a PNG download that is drawn on click."""
    st.vega_lite_chart(figure.data, figure.vega(), key=f"{key}_chart", width="stretch")
    st.download_button(
        "PNG", figure.png, file_name=f"{name}.png", mime="image/png", key=f"{key}_png", on_click="ignore"
    )


def to_yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def yaml_block(title: str, data: object, name: str, key: str, expanded: bool = False) -> None:
    """Show ``data`` as YAML in an expander, with a .yaml download; a str is taken as YAML text."""
    text = data if isinstance(data, str) else to_yaml(data)
    with st.expander(title, expanded=expanded):
        st.code(text, language="yaml")
        st.download_button(
            "YAML", text, file_name=f"{name}.yaml", mime="application/yaml", key=f"{key}_yaml", on_click="ignore"
        )


def show_error(err: Exception) -> None:
    st.error(str(err), icon=":material/error:")


@contextmanager
def stop_on_bad_input() -> Iterator[None]:
    """Show a SpecError on the page and end this run of the page script; the app keeps serving.

    ``st.stop`` ends the current script run only, so the widgets above stay usable and the next
    change reruns the page.
    """
    try:
        yield
    except SpecError as err:
        log.info("bad input shown on the page: %s", err)
        show_error(err)
        st.stop()

"""``ctxsim dashboard``: serve the Streamlit what-if dashboard on this machine.

The app runs as ``streamlit run`` bound to 127.0.0.1, in place of this process on POSIX and as a
subprocess elsewhere, so ``import ctxsim`` and the other subcommands never import streamlit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_PORT = 8501
ADDRESS = "127.0.0.1"


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="Serve the what-if dashboard on http://127.0.0.1:PORT (Streamlit)."
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port to listen on (default {DEFAULT_PORT})."
    )
    parser.set_defaults(func=run_dashboard)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port '{text}': use a whole number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: use a number from 1 to 65535")
    return value


def app_path() -> Path | None:
    """Path of dashboards/app.py in the installed ``dashboards`` package, or None when it is missing.

    ``find_spec`` locates the package without importing it, so ctxsim never imports the dashboard.
    """
    spec = importlib.util.find_spec("dashboards")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "app.py"
        if path.is_file():
            return path
    return None


def streamlit_command(app: Path, port: int) -> list[str]:
    """Return the ``streamlit run`` command line: loopback only, no browser, no usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        ADDRESS,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
    ]


def run_dashboard(args: argparse.Namespace) -> int:
    app = app_path()
    if app is None:
        sys.stderr.write("ctxsim dashboard: error: dashboards/app.py not found; reinstall ctxsim with 'pip install -e .'\n")
        return 1
    if importlib.util.find_spec("streamlit") is None:
        sys.stderr.write("ctxsim dashboard: error: streamlit is not installed; run 'pip install streamlit'\n")
        return 1

    print(f"ctxsim dashboard: serving http://{ADDRESS}:{args.port} (Ctrl-C stops it)", flush=True)
    command = streamlit_command(app, args.port)
    if os.name == "posix":
        # Become the server, so that signals (Ctrl-C, a service manager's SIGTERM) reach it directly.
        os.execv(command[0], command)
    try:
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 0

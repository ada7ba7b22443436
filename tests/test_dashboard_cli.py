"""``ctxsim dashboard``: the Streamlit command line, and a real server on loopback."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ctxsim.cli.dashboard import app_path, streamlit_command
from ctxsim.cli.main import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_command_binds_loopback():
    command = streamlit_command(Path("app.py"), 8600)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.headless") + 1] == "true"


def test_app_path_found():
    path = app_path()
    assert path is not None
    assert path.name == "app.py"
    assert path.parent.name == "dashboards"


def test_port_out_of_range(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--port", "70000"])
    assert exit_info.value.code == 2
    assert "invalid port 70000" in capsys.readouterr().err


def test_cli_import_skips_streamlit():
    code = "import sys, ctxsim.cli.main as m; m.build_parser(); print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


def test_dashboard_serves_on_loopback():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ctxsim.cli.main", "dashboard", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and health != "ok":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    health = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert health == "ok"
        if Path("/proc/net/tcp").exists():
            # 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex.
            assert _listening_addresses(port) == {"0100007F"}
    finally:
        server.terminate()
        server.wait(timeout=30)

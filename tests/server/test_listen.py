"""``nrg serve`` binds before it loads or announces anything; a busy port is one line naming --port."""

from __future__ import annotations

import socket

import pytest

from server.cli import main
from server.listen import bind
from tests.server.conftest import free_port


def test_bind_returns_a_bound_socket_and_a_busy_port_names_the_flag():
    port = free_port()
    sock = bind("127.0.0.1", port)
    try:
        assert sock.getsockname() == ("127.0.0.1", port)
        sock.listen()
        with pytest.raises(ValueError, match=rf"port {port} on 127.0.0.1 is already in use .* --port"):
            bind("127.0.0.1", port)
    finally:
        sock.close()


def test_serve_on_a_busy_port_exits_2_with_one_line_before_loading_models(tmp_path, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
                  "--model", str(tmp_path / "not-loaded")])  # loading it would fail differently
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        f"nrg: error: port {port} on 127.0.0.1 is already in use (another nrg serve, e.g. `make serve`?); "
        "stop it or choose another port with --port")
    assert "nrg-serve on" not in captured.out

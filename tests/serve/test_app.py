"""The app in this process (FastAPI's test client): settings, authentication, the socket, and a JSON answer
even to a bug."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from radd_cli.cli import app as cli
from radd_cli.errors import ConfigError, RaddError
from radd_cli.io.inference import load_for_inference
from radd_cli.serve import app as serve_app
from radd_cli.serve.app import ServeSettings, create_app, listen
from tests.cli_helpers import assert_clean_error

GOOD = {"model": "tiny", "prompt": "The cat", "max_tokens": 3, "seed": 1}


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_for_inference(str(tiny_checkpoint), "cpu")


@pytest.mark.parametrize("key", ["", " ", "\t\n"])
def test_an_empty_or_blank_key_is_refused_at_start_up(key):
    with pytest.raises(ConfigError, match="api_key: the key is empty or only spaces"):
        ServeSettings(name="tiny", api_key=key)


def test_every_way_of_giving_an_empty_key_stops_the_server_before_the_model_loads(tmp_path, monkeypatch):
    nowhere = str(tmp_path / "nowhere")  # refused before it is looked at
    for option in (["--api-key", ""], ["--api-key", "  "]):
        assert_clean_error(CliRunner().invoke(cli, ["serve", "--model", nowhere, *option]), "--api-key: the key is empty", exit_code=2)
    for variable in (" ", ""):  # Click reads an empty variable as none given: the server was open
        monkeypatch.setenv("RADD_API_KEY", variable)
        assert_clean_error(CliRunner().invoke(cli, ["serve", "--model", nowhere]), "--api-key: the key is empty", exit_code=2)


@pytest.mark.parametrize("configured", [" secret", "secret \n", "\tsecret\t"])
def test_a_key_given_with_surrounding_spaces_is_the_key_without_them(loaded, configured):
    settings = ServeSettings(name="tiny", api_key=configured)
    with TestClient(create_app(loaded, settings)) as client:
        for header, status in [
            ("Bearer secret", 200),
            ("bearer   secret  ", 200),
            (f"Bearer {configured}", 200),  # HTTP drops the spaces around a header value anyway
            ("Bearer secre", 401),
            ("Bearer ", 401),
            ("secret", 401),
        ]:
            response = client.get("/v1/models", headers={"Authorization": header})
            assert response.status_code == status, (header, response.text)
        assert client.get("/v1/models").status_code == 401


def test_a_key_outside_ascii_matches_the_bytes_a_client_sends(loaded):
    with TestClient(create_app(loaded, ServeSettings(name="tiny", api_key="clé"))) as client:
        assert client.get("/v1/models", headers={"Authorization": "Bearer clé".encode()}).status_code == 200  # UTF-8


def test_a_bug_is_answered_as_a_json_error_object_not_plain_text(loaded, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(serve_app, "plan", broken)
    with TestClient(create_app(loaded, ServeSettings(name="tiny")), raise_server_exceptions=False) as client:
        response = client.post("/v1/completions", json=GOOD)
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        assert response.json()["error"]["type"] == "server_error"
        assert client.get("/health").status_code == 200


def test_a_second_server_on_a_port_is_refused_even_before_the_first_accepts_connections():
    first = listen("127.0.0.1", 0)  # bound and listening, as a server that is still loading its model
    try:
        port = first.getsockname()[1]
        with pytest.raises(RaddError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)  # SO_REUSEADDR let both bind; only listen() tells
    finally:
        first.close()


def test_two_servers_started_at_once_on_one_port_leave_one_line_from_the_loser(tiny_checkpoint):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "radd_cli", "serve", "--model", str(tiny_checkpoint), "--port", str(port)]
    servers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while all(process.poll() is None for process in servers):
            assert time.monotonic() < deadline, "neither server stopped"
            time.sleep(0.1)
        loser = next(process for process in servers if process.poll() is not None)
        stdout, stderr = loser.communicate()
        assert loser.returncode == 1 and stdout == "", (stdout, stderr)  # never claims to serve
        assert stderr.strip().splitlines() == [
            f"Error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --host or --port"
        ]
    finally:
        for process in servers:
            process.kill()
            process.wait(30)

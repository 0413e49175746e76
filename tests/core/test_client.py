"""The coordinator client against a real local HTTP server (stdlib), not a mock."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fedge import FedgeError
from fedge.core import ApiError, CoordinatorClient, CoordinatorUnreachable
from tests.support.ports import free_port


class _Handler(BaseHTTPRequestHandler):
    """Echoes requests under /echo; answers problems and odd bodies elsewhere."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length) if length else b""
        if self.path.startswith("/echo"):
            echo = {
                "method": self.command,
                "path": self.path,
                "key": self.headers.get("X-API-Key"),
                "type": self.headers.get("Content-Type"),
                "body": sent.decode(),
            }
            self._answer(200, json.dumps(echo).encode())
        elif self.path == "/problem":
            self._answer(403, b'{"detail": "this needs the admin role"}')
        elif self.path == "/invalid":
            body = {"detail": [{"loc": ["body", "ttl_seconds"], "msg": "must be > 0"}]}
            self._answer(422, json.dumps(body).encode())
        elif self.path == "/html":
            self._answer(502, b"<html>bad gateway</html>", "text/html")
        elif self.path == "/not-json":
            self._answer(200, b"plain words", "text/plain")
        elif self.path == "/empty":
            self._answer(204, b"")
        else:
            self._answer(404, b'{"detail": "Not Found"}')

    do_GET = do_POST = do_DELETE = _route  # noqa: N815 - http.server's names


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_get_json_sends_the_api_key(server: str) -> None:
    answer = CoordinatorClient(server, api_key="fedge-op.abc").get_json("/echo/x")
    assert answer["method"] == "GET" and answer["path"] == "/echo/x"
    assert answer["key"] == "fedge-op.abc"


def test_no_key_sends_no_key_header(server: str) -> None:
    assert CoordinatorClient(server).get_json("echo")["key"] is None


def test_post_json_sends_a_json_body(server: str) -> None:
    answer = CoordinatorClient(server + "/").post_json("/echo", {"ttl_seconds": 60})
    assert answer["method"] == "POST" and answer["type"] == "application/json"
    assert json.loads(answer["body"]) == {"ttl_seconds": 60}


def test_delete_and_raw_request(server: str) -> None:
    client = CoordinatorClient(server)
    assert client.delete_json("/echo/1")["method"] == "DELETE"
    status, headers, body = client.request("POST", "/echo", body=b"raw")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["body"] == "raw"
    assert client.request("GET", "/empty")[0] == 204
    assert client.get_json("/empty") is None


def test_a_problem_becomes_an_api_error_with_its_detail(server: str) -> None:
    with pytest.raises(ApiError) as caught:
        CoordinatorClient(server).get_json("/problem")
    assert caught.value.status == 403
    assert caught.value.detail == "this needs the admin role"
    assert isinstance(caught.value, FedgeError)
    assert not isinstance(caught.value, CoordinatorUnreachable)


def test_validation_errors_read_as_one_line(server: str) -> None:
    with pytest.raises(ApiError) as caught:
        CoordinatorClient(server).post_json("/invalid", {})
    assert caught.value.status == 422 and caught.value.detail == "ttl_seconds: must be > 0"


def test_an_error_that_is_not_json_keeps_its_text(server: str) -> None:
    with pytest.raises(ApiError) as caught:
        CoordinatorClient(server).get_json("/html")
    assert caught.value.status == 502 and "bad gateway" in caught.value.detail


def test_a_success_that_is_not_json_is_a_typed_error(server: str) -> None:
    with pytest.raises(ApiError, match="not JSON") as caught:
        CoordinatorClient(server).get_json("/not-json")
    assert caught.value.status == 200


def test_a_refused_connection_is_unreachable_with_status_0() -> None:
    with pytest.raises(CoordinatorUnreachable) as caught:
        CoordinatorClient(f"http://127.0.0.1:{free_port()}").get_json("/healthz")
    assert caught.value.status == 0 and "unreachable" in caught.value.detail


def test_an_unknown_host_is_unreachable() -> None:
    with pytest.raises(CoordinatorUnreachable):
        CoordinatorClient("http://no-such-host.invalid:8000", timeout=5).get_json("/healthz")


def test_a_silent_server_times_out_as_unreachable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection, never answers
        client = CoordinatorClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        with pytest.raises(CoordinatorUnreachable, match="timed out"):
            client.get_json("/healthz")


def test_tls_to_a_plain_server_is_unreachable(server: str) -> None:
    with pytest.raises(CoordinatorUnreachable):
        CoordinatorClient(server.replace("http://", "https://")).get_json("/echo")


@pytest.mark.parametrize(
    "url", ["", "127.0.0.1:8000", "ftp://host", "http://", "http://host:port", "file:///x"]
)
def test_a_bad_base_url_is_a_typed_error(url: str) -> None:
    with pytest.raises(ApiError, match="not a coordinator URL"):
        CoordinatorClient(url)


def test_a_bad_timeout_or_ca_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="timeout"):
        CoordinatorClient("http://127.0.0.1:1", timeout=0)
    with pytest.raises(ApiError, match="API key"):
        CoordinatorClient("http://127.0.0.1:1", api_key="fedge-op.a\nX-Evil: 1")
    with pytest.raises(ApiError, match="API key"):
        CoordinatorClient("http://127.0.0.1:1", api_key="fedge-op.é")
    with pytest.raises(ApiError, match="CA file"):
        CoordinatorClient("https://127.0.0.1:1", ca_file=tmp_path / "missing.pem")

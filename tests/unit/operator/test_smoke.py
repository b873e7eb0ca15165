"""Where the operator calls a Service (the smoke request, the judge) and what counts as an answer from the right model."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from finetune_operator.reconcile.observed import ready_service_url
from finetune_operator.runtime.smoke import smoke_request

pytestmark = pytest.mark.unit


def test_a_service_is_called_by_its_dns_name_once_it_has_a_ready_endpoint():
    slices = [{"ports": [{"name": "http", "port": 8000}], "endpoints": [
        {"addresses": ["10.0.0.9"], "conditions": {"ready": False}},
        {"addresses": ["10.0.0.7"], "conditions": {"ready": True}},
    ]}]
    assert ready_service_url("demo-serve", "team", slices, 8000, "dns") == "http://demo-serve.team.svc:8000"
    # an operator outside the cluster calls the ready endpoint's pod address (its target port)
    assert ready_service_url("demo-serve", "team", slices, 80, "endpoints") == "http://10.0.0.7:8000"
    assert ready_service_url("demo-serve", "team", slices[:0], 8000, "dns") is None
    assert ready_service_url("demo-serve", "team", [{**slices[0], "endpoints": slices[0]["endpoints"][:1]}], 8000,
                             "endpoints") is None


class _Server(BaseHTTPRequestHandler):
    model = "demo"

    def do_POST(self):  # noqa: N802 - http.server API
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"model": self.model, "requested": request["model"],
                           "choices": [{"message": {"role": "assistant", "content": "pong"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_completion_from_the_right_model_passes(server):
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ok, message = smoke_request(url, "demo")
    assert ok and message == f"model demo answered 'pong' at {url}"  # the Ready condition names where it asked


def test_a_completion_from_another_model_fails(server, monkeypatch):
    monkeypatch.setattr(_Server, "model", "tiny-base")
    ok, message = smoke_request(f"http://127.0.0.1:{server.server_address[1]}", "demo")
    assert not ok and "tiny-base" in message


def test_no_server_fails_with_the_url():
    ok, message = smoke_request("http://127.0.0.1:9", "demo", timeout=2)
    assert not ok and "127.0.0.1:9" in message

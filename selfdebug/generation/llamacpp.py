"""llama.cpp backend: a small, quick-starting engine for CPU machines (docs/performance.md).

The model's HF folder (the base, or the merged adapter chain of a train.py final/) is converted
once to a GGUF file (llama.cpp's own convert_hf_to_gguf.py, at `gguf_type`, default q8_0: 8-bit
weights, about the HF int8 backend's precision) and served by a llama-server child process with
`parallel` slots of ctx_per_slot tokens each: continuous batching.
Install both with `make llamacpp` (scripts/install_llamacpp.sh builds them from the llama.cpp that
llama-cpp-python vendors in its PyPI sdist).

Same sampling semantics as the HF backend (generation/hf.py), as the vLLM backend has them:
prompts rendered with selfdebug.chat.render_chat and tokenized by the HF tokenizer (the server
gets token ids), temperature then top-p over the whole vocabulary (no top-k, min-p or penalties),
temperature 0 = greedy, stop at the chat format's end-of-turn strings + params.stop and at the
vocabulary's end-of-generation tokens, text cut before the stop string.

All draws of one prompt in a call (its n samples, and the same prompt in other rows, as the
teacher's branches of one wrong program) are requests of up to `parallel` completions (the server's
n_cmpl): the prompt is prefilled once and its KV cache copied to the other slots (1.6x in a
prefill-heavy probe, 7 teacher prompts x 2 samples of the 1.5B model; calls bound by their longest
row gain less: docs/performance.md). Seeds: the m-th draw of a prompt in a call (rows in
order, then samples) draws with _seed(params.seed, its prompt's tokens) + m, so a sample does not
depend on the other prompts of its call or batch: a resumed run redraws exactly the samples it lost,
up to numerics (a row's logits can differ in the last bits with the batch it is computed in, as on
any batched engine).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from selfdebug.chat import needs_special_tokens, render_chat, stop_strings
from selfdebug.generation import BackendError, Completion, SamplingParams

log = logging.getLogger(__name__)
INSTALL_HINT = "run `make llamacpp` (needs cmake and g++), or set $SELFDEBUG_LLAMA_SERVER, or use backend=hf"
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")  # what convert_hf_to_gguf.py writes directly
# llama-server's samplers that would change the distribution, all switched off: HF semantics.
NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "presence_penalty": 0.0,
                    "frequency_penalty": 0.0, "dry_multiplier": 0.0, "xtc_probability": 0.0, "top_n_sigma": -1.0,
                    "samplers": ["temperature", "top_p"]}


def install_dir() -> Path:
    from selfdebug.models import cache_root

    return cache_root() / "llama.cpp"


def find_server(server: str | None = None) -> Path:
    """llama-server: `server` (backend.server), $SELFDEBUG_LLAMA_SERVER, `make llamacpp`'s copy, or PATH."""
    for candidate in (server, os.environ.get("SELFDEBUG_LLAMA_SERVER"), install_dir() / "bin" / "llama-server",
                      shutil.which("llama-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    if server:
        raise BackendError(f"backend.server={server} is not an executable llama-server: fix the path or {INSTALL_HINT}")
    raise BackendError(f"backend=llamacpp needs llama.cpp's llama-server, which is not installed: {INSTALL_HINT}")


def gguf_file(hf_dir: str | Path, gguf_type: str = "q8_0") -> Path:
    """The GGUF conversion of an HF model folder, made once and kept beside it (model-<type>.gguf).

    Written to a temporary name and renamed: a killed conversion leaves nothing that looks done.
    """
    if gguf_type not in GGUF_TYPES:
        raise BackendError(f"backend.gguf_type={gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    hf_dir = Path(hf_dir)
    out = hf_dir / f"model-{gguf_type}.gguf"
    if out.is_file():
        return out
    converter = install_dir() / "convert_hf_to_gguf.py"
    if not converter.is_file():
        raise BackendError(f"llama.cpp's convert_hf_to_gguf.py is not in {install_dir()}: {INSTALL_HINT}")
    tmp = hf_dir / f".model-{gguf_type}.{os.getpid()}.gguf.tmp"
    cmd = [sys.executable, str(converter), str(hf_dir), "--outtype", gguf_type, "--outfile", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise BackendError(f"converting {hf_dir} to GGUF failed:\n{tail}\n(the converter needs the "
                           "requirements.txt packages incl. sentencepiece; a model architecture llama.cpp "
                           "does not know cannot use backend=llamacpp)")
    os.replace(tmp, out)
    return out


class LlamaCppGenerator:
    """Generator over a llama-server child process (see the module docstring)."""

    def __init__(self, model_path: str | Path, *, chat_format: str = "template", dtype: str = "auto",
                 gguf_type: str = "q8_0", parallel: int = 16, ctx_per_slot: int = 2048,
                 threads: int | None = None, server: str | None = None, startup_timeout_s: float = 600.0):
        del dtype  # the GGUF's weight type is gguf_type
        from transformers import AutoTokenizer

        from selfdebug.generation.vllm import _eos_ids

        if parallel < 1 or ctx_per_slot < 64:
            raise ValueError(f"LlamaCppGenerator: parallel >= 1 and ctx_per_slot >= 64, got {parallel}, {ctx_per_slot}")
        binary = find_server(server)
        self.chat_format = chat_format
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.turn_stops = stop_strings(chat_format, self.tokenizer)
        self.eos_ids = _eos_ids(str(model_path), self.tokenizer)
        self.ctx_per_slot, self.parallel = ctx_per_slot, parallel
        self.gguf = gguf_file(model_path, gguf_type)
        threads = threads or len(os.sched_getaffinity(0))
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server.", suffix=".log", delete=False)
        # -c is split into `parallel` slots of ctx_per_slot tokens (with -np given the cache is not unified).
        cmd = [str(binary), "-m", str(self.gguf), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(parallel), "-c", str(parallel * ctx_per_slot), "-t", str(threads), "-tb", str(threads),
               "--no-webui", "-cram", "0"]
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="llamacpp")
        self._lock = threading.Lock()
        try:
            self._wait_ready(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        if self._pool is None:
            raise RuntimeError("LlamaCppGenerator.generate called after close()")
        add_special = needs_special_tokens(self.chat_format)
        prompts = [self.tokenizer(render_chat(m, self.chat_format, self.tokenizer), add_special_tokens=add_special)
                   ["input_ids"] for m in conversations]
        stop = list(dict.fromkeys(params.stop + self.turn_stops))
        for ids in prompts:
            if len(ids) >= self.ctx_per_slot:
                raise BackendError(f"a prompt of {len(ids)} tokens does not fit backend.ctx_per_slot="
                                   f"{self.ctx_per_slot}: raise it")
        # Every draw of one prompt in this call (its n samples, and those of the same prompt in other
        # rows, e.g. the teacher's branches of one wrong program) goes out in requests of up to
        # `parallel` completions (n_cmpl): the server prefills the prompt once and copies its KV cache.
        # The m-th draw of a prompt is seeded _seed(params.seed, prompt) + m (module docstring).
        jobs = []
        for key, slots in draws(prompts, params.n).items():
            seed = _seed(params.seed, list(key))
            for m in range(0, len(slots), self.parallel):
                part = slots[m:m + self.parallel]
                jobs.append((part, self._pool.submit(self._complete, list(key), params, stop, seed + m, len(part))))
        start = time.monotonic()
        try:
            results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
            for part, future in jobs:
                for (row, j), completion in zip(part, future.result(), strict=True):
                    results[row][j] = completion
            seconds = time.monotonic() - start
            tokens = sum(c.n_tokens for row in results for c in row)
            log.info("llama-server: %d samples, %d tokens in %.1f s (%.1f tokens/s)", len(prompts) * params.n,
                     tokens, seconds, tokens / max(seconds, 1e-9))
            return results
        except BaseException:
            for _, future in jobs:
                future.cancel()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    # ---- one sample --------------------------------------------------------------------------------

    def _complete(self, ids: list[int], params: SamplingParams, stop: list[str], seed: int,
                  count: int) -> list[Completion]:
        """`count` samples of one prompt in one request; the server seeds sample j with seed + j.
        cache_prompt off: every request prefills its whole prompt, so a sample does not depend on what
        a slot held before (a reused prefix computes the last prompt position in another batch shape,
        which moved a T=1 sample between two identical calls)."""
        body = {"prompt": ids, "n_predict": min(params.max_new_tokens, self.ctx_per_slot - len(ids)),
                "temperature": params.temperature, "top_p": params.top_p if params.temperature > 0 else 1.0,
                "seed": seed, "n_cmpl": count, "stop": stop, "cache_prompt": False, "return_tokens": True,
                **NEUTRAL_SAMPLING}
        out = self._post("/completion", body)
        outs = out if isinstance(out, list) else [out]  # a list, in sample order, when n_cmpl > 1
        if len(outs) != count:
            raise BackendError(f"llama-server returned {len(outs)} completions for n_cmpl={count}")
        return [self._completion(o) for o in outs]

    def _completion(self, out: dict) -> Completion:
        token_ids = [int(t) for t in out.get("tokens") or []]
        text = out.get("content", "")
        stop_type = out.get("stop_type")
        if stop_type == "limit" or (stop_type == "none" and out.get("truncated")):
            return Completion(text, len(token_ids), "length", tuple(token_ids))
        if stop_type == "word":
            # The server cut the text before the stop string and kept the ids up to the one completing
            # it; keep the ids up to the token that starts it, as the HF backend does.
            from selfdebug.generation.vllm import _tokens_to_cover

            word = out.get("stopping_word") or ""
            token_ids = token_ids[:_tokens_to_cover(self.tokenizer, token_ids, text + word[:1])]
        return Completion(text, len(token_ids), "stop", tuple(token_ids))

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            # No read timeout: a sample of a 1.5B model on a busy CPU can take longer than any fixed
            # limit (or the run may be paused with SIGSTOP), and a dead server closes the socket.
            with urllib.request.urlopen(request, timeout=None) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, ValueError) as err:
            detail = err.read()[:300].decode("utf-8", "replace") if isinstance(err, urllib.error.HTTPError) else err
            raise BackendError(f"llama-server ({self.gguf.name}) failed a request: {detail}\n{self._log_tail()}") from None

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendError(f"llama-server exited with code {self.process.returncode} while loading "
                                   f"{self.gguf}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError):
                pass  # 503 while loading, or not listening yet
            time.sleep(0.2)
        raise BackendError(f"llama-server did not become ready within {timeout_s:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return ""


def draws(prompts: list[list[int]], n: int) -> dict[tuple[int, ...], list[tuple[int, int]]]:
    """Each distinct prompt of a call -> its draws as (row, sample), rows in order, then samples: the
    m-th draw of a prompt is seeded _seed(seed, prompt) + m (this backend and the vLLM one)."""
    out: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for row, ids in enumerate(prompts):
        out.setdefault(tuple(ids), []).extend((row, j) for j in range(n))
    return out


def _seed(seed: int, ids: list[int]) -> int:
    """The seed of a prompt's first draw in a call (its m-th draw: + m), from the call's seed and the
    prompt's tokens. Below 2^31, so seed + m never reaches llama.cpp's "random seed" value 2^32 - 1."""
    digest = hashlib.sha256(json.dumps([seed, ids]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _die_with_parent() -> None:
    """In the server's process before exec (Linux): SIGTERM it when this process dies, so a killed
    stage (kill -9 included) leaves no server behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

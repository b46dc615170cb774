"""transformers backend: batched sampling with model.generate (CPU or one GPU)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# With OpenMP's default active waiting, torch threads spin for a core that another process holds:
# on a busy 2-core box generation ran 7-10x slower with 2 threads than with 1. Passive waiting
# removes that cliff. Only effective if torch is not imported yet (entry scripts may set it too).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from selfdebug.chat import needs_special_tokens, render_chat, stop_strings  # noqa: E402
from selfdebug.generation import Completion, SamplingParams  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX; oneDNN's own test)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def load_dtype(dtype: str, device: str | torch.device) -> torch.dtype | str:
    """The dtype to load weights in. "auto": the checkpoint's dtype on a GPU and on a CPU that
    computes bf16 in hardware (cpu_has_native_bf16), float32 on other CPUs.

    CPUs without native bf16 (e.g. AVX2 only) run bf16 matmuls 2-3x slower than fp32: measured
    with Qwen2.5-Coder-0.5B on 2 cores, batch 4-8 (benchmarks/bench_generation.py). On a CPU with it
    (AVX512-BF16 here) one layer's matmul ran 2.9x faster than fp32 and LoRA SFT 1.3x, at 74% of
    the peak memory (docs/performance.md).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dtype == "auto" and torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        return torch.float32
    return DTYPES[dtype]


QUANTIZE_OPTIONS = ("int8",)


def quantize_for_cpu(model: Any, quantize: str, device: torch.device) -> Any:
    """backend.quantize=int8: every nn.Linear with int8 weights (per output channel) and int8
    activations quantized on the fly (torch's dynamic quantization, fbgemm kernels). Decoding on a
    CPU is bound by reading the weights, so a quarter of the bytes is about 4x the speed: measured
    0.51 -> 0.12 s per step for Qwen2.5-Coder-0.5B at 12 rows on 2 cores. Sampling only (the
    weights are approximated; trainers never see this model), and CPU only."""
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(f"backend.quantize={quantize!r}: expected null or one of {QUANTIZE_OPTIONS}")
    if device.type != "cpu":
        raise ValueError(f"backend.quantize={quantize} is for CPU inference; on {device.type} use model.dtype=bfloat16")
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that the API moves to torchao
        return quantize_dynamic(model.float(), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class TemperatureTopP(LogitsProcessor):
    """Temperature, then nucleus (top-p) filtering: transformers' TemperatureLogitsWarper +
    TopPLogitsWarper, with the nucleus found among the top `k` tokens instead of a sort of the whole
    vocabulary. A token is kept iff the probability of the tokens ranked above it is < top_p (at
    least one is kept), as there. On a CPU the full sort cost more than the model: 0.2 s of a
    0.36 s step for 16 rows of Qwen's 151,936-token vocabulary. A row whose top k do not reach
    top_p (a very flat distribution) falls back to the full sort, so the result never changes.

    scores: [B, V] next-token logits -> [B, V] with the removed tokens at -inf."""

    def __init__(self, temperature: float, top_p: float, k: int = 512):
        self.temperature, self.top_p, self.k = temperature, top_p, k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        k = min(self.k, scores.shape[-1])
        probs = scores.float().softmax(dim=-1)
        top_probs, top_ids = probs.topk(k, dim=-1)  # [B, k], descending
        filtered = _nucleus(scores, top_probs, top_ids, self.top_p)
        flat = top_probs.sum(dim=-1) < self.top_p  # the nucleus needs more than k tokens: sort them all
        if flat.any():
            sorted_probs, order = probs[flat].sort(dim=-1, descending=True)
            filtered[flat] = _nucleus(scores[flat], sorted_probs, order, self.top_p)
        return filtered


def _nucleus(scores: torch.Tensor, sorted_probs: torch.Tensor, order: torch.Tensor, top_p: float) -> torch.Tensor:
    """scores with only the nucleus left finite. sorted_probs: [B, n] descending probabilities of
    the tokens order: [B, n]; a token is kept iff the mass ranked above it is < top_p (the first
    always); tokens outside `order` are removed."""
    keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
    keep[:, 0] = True
    kept_scores = scores.gather(-1, order).masked_fill(~keep, float("-inf"))
    return torch.full_like(scores, float("-inf")).scatter(-1, order, kept_scores)


class StopOnStrings(StoppingCriteria):
    """Marks a row done once its generated text contains any stop string.

    Only the last `window` tokens are decoded per step: a stop string of L characters spans at
    most 4*L byte-level tokens (a UTF-8 character is at most 4 bytes), so this is exact and cheap.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], prompt_len: int):
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_len = prompt_len
        self.window = 4 * max(len(s) for s in stop) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """input_ids: [B, T] prompt + generated so far; returns done: [B]."""
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=False)
        done = [any(s in tail for s in self.stop) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFGenerator:
    """Generator over a transformers causal LM.

    Pass `model_path` (an HF folder or hub id) to load, or `model` + `tokenizer` objects to sample
    from a live policy during training (its train/eval mode is restored after each call).
    """

    def __init__(self, model_path: str | Path | None = None, *, model: Any = None, tokenizer: Any = None,
                 chat_format: str = "template", dtype: str = "auto", device: str | None = None,
                 batch_size: int = 8, num_threads: int | None = None, quantize: str | None = None):
        if (model_path is None) == (model is None):
            raise ValueError("HFGenerator: pass either model_path or model (+ tokenizer)")
        if model is not None and tokenizer is None:
            raise ValueError("HFGenerator: a model object needs its tokenizer too")
        if batch_size < 1:
            raise ValueError(f"HFGenerator: batch_size must be >= 1, got {batch_size}")
        if device is None:  # a live model stays where the trainer put it
            device = model.device if model is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # torch defaults to the machine's physical cores; follow the CPUs this process may use.
            torch.set_num_threads(num_threads or len(os.sched_getaffinity(0)))
        torch_dtype = load_dtype(dtype, self.device)  # validates dtype even for a model object
        if model is None:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device)
        self.model = quantize_for_cpu(model, quantize, self.device) if quantize else model
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.batch_size = batch_size  # rows (prompt x sample) per generate() call
        if tokenizer.pad_token_id is None:  # left padding needs a pad id; EOS is never attended to
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = _eos_ids(model, tokenizer)
        self.turn_stops = stop_strings(chat_format, tokenizer)

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        prompts = [render_chat(messages, self.chat_format, self.tokenizer) for messages in conversations]
        stop = tuple(dict.fromkeys(params.stop + self.turn_stops))  # ordered, no duplicates
        rows = [i for i in range(len(prompts)) for _ in range(params.n)]  # prompt index per row
        results: list[list[Completion]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        torch.manual_seed(params.seed)  # one seed per call: a rerun with the same inputs reproduces
        try:
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start:start + self.batch_size]
                completions = self._generate_batch([prompts[i] for i in batch], params, stop)
                for i, completion in zip(batch, completions, strict=True):
                    results[i].append(completion)
        finally:
            self.model.train(was_training)
        return results

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str], params: SamplingParams,
                        stop: tuple[str, ...]) -> list[Completion]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                             add_special_tokens=needs_special_tokens(self.chat_format)).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        sampling = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=1.0, top_p=1.0,  # applied by TemperatureTopP (below), in this order
            top_k=0,  # 0 disables top-k (transformers would default to 50); match vLLM/OpenAI
            repetition_penalty=1.0,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        criteria = StoppingCriteriaList([StopOnStrings(self.tokenizer, stop, prompt_len)] if stop else [])
        warpers = LogitsProcessorList([TemperatureTopP(params.temperature, params.top_p)] if sampling else [])
        out = self.model.generate(**enc, generation_config=config, stopping_criteria=criteria, logits_processor=warpers)
        return [self._finish(row.tolist(), stop) for row in out[:, prompt_len:]]

    def _finish(self, ids: list[int], stop: tuple[str, ...]) -> Completion:
        """Cut one generated row at its first stop string or EOS (whichever comes first)."""
        # 1. EOS: generate() stops the row there and pads after it.
        eos_at = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
        body = ids if eos_at is None else ids[:eos_at]
        # 2. Stop strings: earliest occurrence in the text before EOS.
        text = self._decode(body)
        hits = [text.find(s) for s in stop if s in text]
        if hits:
            cut = min(hits)
            token_ids = body[:self._tokens_to_cover(body, text[:cut + 1])]
            return Completion(text[:cut], len(token_ids), "stop", tuple(token_ids))
        if eos_at is not None:
            token_ids = ids[:eos_at + 1]  # keep EOS: the policy chose to end here
            return Completion(text, len(token_ids), "stop", tuple(token_ids))
        return Completion(text, len(ids), "length", tuple(ids))

    def _decode(self, ids: list[int]) -> str:
        # Keep special tokens so a special-token stop string (e.g. "<|im_end|>") can be found;
        # no clean-up of spaces: code must come back byte-exact.
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _tokens_to_cover(self, ids: list[int], prefix: str) -> int:
        """Fewest leading tokens whose text starts with `prefix` (binary search over lengths)."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._decode(ids[:mid]).startswith(prefix):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids from the model's generation config (may be a list) and the tokenizer."""
    return merge_eos_ids(getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer)


def merge_eos_ids(configured: int | list[int] | None, tokenizer: Any) -> set[int]:
    """A generation config's eos_token_id (an id, a list or None) plus the tokenizer's EOS."""
    ids = set()
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids

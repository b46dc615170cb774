"""Shared fixtures: a tiny random Llama + in-memory BPE tokenizer saved as an HF folder.

Opt-in markers: `slow` and `gpu` tests are skipped unless the -m expression names the marker
(`pytest -m slow`, `pytest -m gpu`, `pytest -m "slow or not slow"` for everything). `vllm` tests run
by default (CI installs vLLM: requirements-vllm.txt) and are skipped only where `import vllm` fails;
`pytest -m vllm` runs them alone, `pytest -m "not vllm"` leaves them out.
"""

import os

# Set before anything imports transformers/huggingface_hub: a hub lookup must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see selfdebug/generation/hf.py

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

OPT_IN_MARKERS = ("slow", "gpu")

# Small code corpus for the tokenizer; repeated so BPE learns merges for common code pieces.
TINY_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def is_even(n):\n    return n % 2 == 0\n",
    "for i in range(10):\n    print(i)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    "assert add(1, 2) == 3\n",
    "Traceback (most recent call last):\nAssertionError\n",
    "The code is wrong because the loop is off by one.\n",
    "```python\nimport math\nx = math.sqrt(4)\n```\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "def count_words(text: str) -> dict[str, int]:\n    counts = {}\n    for word in text.split():\n"
    "        counts[word] = counts.get(word, 0) + 1\n    return counts\n",
    "while left <= right:\n    mid = (left + right) // 2\n"
    "    if nums[mid] < target:\n        left = mid + 1\n",
    "try:\n    value = int(s)\nexcept ValueError:\n    value = None\n",
    "Write a Python function to reverse a string. The test failed with a wrong answer.\n",
    "return sorted(set(lst), key=lambda x: -x)[:k] if lst else []\n",
] * 4
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
# ChatML-style template: every turn ends with <|im_end|>; the generation prompt opens an assistant turn.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def pytest_collection_modifyitems(config, items):
    selected = config.getoption("-m") or ""
    for marker in OPT_IN_MARKERS:
        if marker in selected:
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: run with `pytest -m {marker}`")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


_VLLM_IMPORT_ERROR: list[str] = []  # filled on the first vllm test: [] = not tried yet, [""] = importable


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test starts an engine
def pytest_runtest_setup(item):
    """A `vllm` test is skipped where vllm cannot be imported (tried once, when the first one runs:
    the import takes seconds, so a run without vllm tests never pays it)."""
    if item.get_closest_marker("vllm") is None:
        return
    if not _VLLM_IMPORT_ERROR:
        try:
            import vllm  # noqa: F401
            _VLLM_IMPORT_ERROR.append("")
        except Exception as exc:  # noqa: BLE001 - any failed import (missing, or a broken build) means no vLLM here
            _VLLM_IMPORT_ERROR.append(f"{type(exc).__name__}: {exc}")
    if _VLLM_IMPORT_ERROR[0]:
        pytest.skip(f"vllm test: `import vllm` fails ({_VLLM_IMPORT_ERROR[0][:200]}); install it: make vllm")


def build_tiny_tokenizer():
    """Byte-level BPE (vocab 512) trained in memory in a few ms, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=TINY_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                        eos_token="<|im_end|>", pad_token="<|pad|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Random 2-layer Llama (~100k params) + tiny tokenizer, saved so from_pretrained(out_dir) works."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         intermediate_size=128, vocab_size=len(tokenizer), max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random Llama + tokenizer (fp32, eos <|im_end|>, pad <|pad|>, ChatML template).

    Session-scoped and shared: treat it as read-only (copy it before training writes into it).
    """
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def flaky_executor(failures: int):
    """A factory for the real engine whose first `failures` jobs report an engine error (a sandbox
    that could not start), as a broken machine would: monkeypatch it over a module's `Executor`."""
    from concurrent.futures import Future

    from selfdebug.execution import ExecResult, Executor

    class FlakyExecutor(Executor):
        remaining = failures

        def submit(self, job):
            if FlakyExecutor.remaining > 0:
                FlakyExecutor.remaining -= 1
                future = Future()
                future.set_result(ExecResult(job_id=job.job_id, status="error", detail="bwrap: cannot start"))
                return future
            return super().submit(job)

    return FlakyExecutor


@pytest.fixture(scope="session")
def collected(tmp_path_factory):
    """A collect.py run dir in the real output format, from 3 real MBPP-train problems and attempt
    logs made of their reference solutions (collection.reference_logs; collect.py's own tests cover
    how real logs come about)."""
    from selfdebug.collection import build_datasets, reference_logs, write_datasets
    from selfdebug.data import load_dataset

    ds = load_dataset("mbpp", split="train", path=Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp.jsonl",
                      limit=3)
    run_dir = tmp_path_factory.mktemp("collected")
    write_datasets(run_dir, *build_datasets({"mbpp_train": ds}, reference_logs("mbpp_train", ds)))
    return run_dir

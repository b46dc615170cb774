"""backend=llamacpp on real models: llama-server (built by `make llamacpp`, which `make test` runs)
over a GGUF converted from the HF folder. Skipped only where llama-server is not installed."""

from pathlib import Path

import pytest

from selfdebug.generation import BackendError, SamplingParams, make_generator
from selfdebug.generation.llamacpp import find_server

try:
    find_server()
    HAVE_SERVER = True
except BackendError:
    HAVE_SERVER = False
needs_server = pytest.mark.skipif(not HAVE_SERVER, reason="llama-server not installed: make llamacpp")

SMOLLM2 = "smollm2-135m-instruct"
PROMPTS = [
    [{"role": "user", "content": "Write a Python function that returns the square of a number."}],
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    [{"role": "user", "content": "Write a Python function is_even(n)."}],
    [{"role": "user", "content": "List three colors."}],
]


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from selfdebug.models import resolve_model

    return Path(resolve_model(SMOLLM2))


@pytest.fixture(scope="module")
def f32_generator(smollm2_dir):
    """The HF weights exactly (f32 GGUF): differences from the HF backend are numerics only."""
    generator = make_generator("llamacpp", smollm2_dir, gguf_type="f32", parallel=4, ctx_per_slot=512)
    yield generator
    generator.close()


@needs_server
def test_greedy_equals_hf_backend(smollm2_dir, f32_generator):
    hf = make_generator("hf", smollm2_dir, dtype="float32", batch_size=4)
    params = SamplingParams(temperature=0.0, max_new_tokens=40)
    try:
        expected = hf.generate(PROMPTS, params)
    finally:
        hf.close()
    got = f32_generator.generate(PROMPTS, params)
    for want, have in zip(expected, got, strict=True):
        assert have[0].text == want[0].text
        assert have[0].token_ids == want[0].token_ids
        assert have[0].finish_reason == want[0].finish_reason


@needs_server
def test_seeded_samples_do_not_depend_on_the_rest_of_the_call(f32_generator):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=24, seed=7)
    together = f32_generator.generate(PROMPTS, params)
    alone = f32_generator.generate(PROMPTS[2:3], params)
    assert [c.text for c in alone[0]] == [c.text for c in together[2]]  # resume-exact: a row alone = in a batch
    assert len({c.text for c in together[0]}) > 1  # the n samples of a prompt are different draws
    other_seed = f32_generator.generate(PROMPTS[:1], SamplingParams(**{**params.__dict__, "seed": 8}))
    assert [c.text for c in other_seed[0]] != [c.text for c in together[0]]


@needs_server
def test_draws_of_a_prompt_share_requests_and_count_on(f32_generator):
    """All draws of one prompt in a call go out as n_cmpl requests of up to `parallel` (4) completions,
    the m-th draw seeded seed + m, whether the draws are one row's n samples or the same prompt in
    several rows (the teacher's branches of one wrong program). Compared at equal request shapes:
    llama.cpp's arithmetic is not exactly batch-invariant, so a T=1 draw may move with its batch."""
    def draw(prompts, n):
        rows = f32_generator.generate(prompts, SamplingParams(n=n, temperature=1.0, top_p=0.95, max_new_tokens=16,
                                                              seed=11))
        return [c.text for row in rows for c in row]

    eight = draw(PROMPTS[:1], 8)  # two requests of 4
    assert len(eight) == 8 and len(set(eight)) > 2
    assert eight[4:] != eight[:4]  # the second request is seeded on (+4), not from the first one's seeds
    assert draw([PROMPTS[0], PROMPTS[0]], 4) == eight  # two rows of 4 draws = one row of 8
    assert draw([PROMPTS[0], PROMPTS[0]], 1) == draw(PROMPTS[:1], 2)


@needs_server
def test_stop_strings_and_length(f32_generator):
    long = f32_generator.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=5))[0][0]
    assert long.finish_reason == "length" and long.n_tokens == 5 == len(long.token_ids)
    full = f32_generator.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=60))[0][0]
    word = full.text.split()[3]  # a word from the middle of the answer
    cut = f32_generator.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_new_tokens=60, stop=(word,)))[0][0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:full.text.index(word)]  # cut before the stop string
    assert word not in cut.text
    assert full.token_ids[:cut.n_tokens] == cut.token_ids  # ids up to the token that starts the stop string


@needs_server
def test_adapter_chain_is_merged_and_served(smollm2_dir, tmp_path):
    """build_generator with a LoRA final/: the merged chain is converted and served, and it samples
    what the HF backend samples from the same merged model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdebug.config import HFBackendConfig, LlamaCppBackendConfig, ModelConfig
    from selfdebug.generation import build_generator

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "final"
    peft.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(adapter)
    cfg = ModelConfig(name=SMOLLM2, source=SMOLLM2, dtype="float32")
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    served = build_generator(cfg, LlamaCppBackendConfig(gguf_type="f32", parallel=2, ctx_per_slot=256), adapter)
    try:
        got = served.generate(PROMPTS[:2], params)
        assert Path(served.gguf).parent == adapter / "merged_model"
    finally:
        served.close()
    hf = build_generator(cfg, HFBackendConfig(batch_size=2), adapter)
    try:
        assert [c[0].text for c in got] == [c[0].text for c in hf.generate(PROMPTS[:2], params)]
    finally:
        hf.close()


def test_missing_server_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDEBUG_CACHE", str(tmp_path))
    monkeypatch.delenv("SELFDEBUG_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="make llamacpp"):
        find_server()
    with pytest.raises(BackendError, match="backend.server"):
        find_server(str(tmp_path / "nope"))


def test_failed_server_start_is_one_clear_error(tmp_path, smollm2_dir, monkeypatch):
    """A server that dies while loading (here: a script that exits) ends in a BackendError with its log."""
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho 'error: cannot load model' >&2\nexit 3\n")
    fake.chmod(0o755)
    gguf = tmp_path / "model" / "model-q8_0.gguf"  # skip the conversion: the fake never reads it
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    for file in smollm2_dir.iterdir():  # the tokenizer and configs, not the weights
        if file.is_file() and file.suffix in (".json", ".jinja", ".txt"):
            (gguf.parent / file.name).write_bytes(file.read_bytes())
    with pytest.raises(BackendError, match="exited with code 3(.|\n)*cannot load model"):
        make_generator("llamacpp", gguf.parent, server=str(fake))


@needs_server
def test_a_killed_stage_leaves_no_server(smollm2_dir, tmp_path):
    """kill -9 of the process that started llama-server takes the server down with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys; from selfdebug.generation import make_generator\n"
              f"g = make_generator('llamacpp', {str(smollm2_dir)!r}, gguf_type='f32', parallel=1, ctx_per_slot=256)\n"
              "print(g.process.pid, flush=True); sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    server = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(server, signal.SIGKILL)
    raise AssertionError("llama-server outlived the killed process that started it")

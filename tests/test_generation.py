"""Chat rendering and the HF generation backend, on the tiny random model from conftest."""

import subprocess
import sys

import pytest

from selfdebug.chat import needs_special_tokens, render_chat, render_with_answer, stop_strings
from selfdebug.generation import Completion, SamplingParams, make_generator

CONVS = [
    [{"role": "user", "content": "Write add(a, b)."}],
    [{"role": "system", "content": "You fix code."},
     {"role": "user", "content": "def f(x):\n    return x +"}],
    [{"role": "user", "content": "Explain the bug."}, {"role": "assistant", "content": "Off by one."},
     {"role": "user", "content": "Now fix it."}],
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    generator = make_generator("hf", tiny_model_dir, chat_format="template", dtype="float32", batch_size=4)
    yield generator
    generator.close()


def greedy(max_new_tokens=20, **kw):
    return SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, **kw)


# ---- chat rendering -------------------------------------------------------------------------------

def test_starchat_render_exact():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fix f."},
                {"role": "assistant", "content": "def f(): pass"}, {"role": "user", "content": "Again."}]
    assert render_chat(messages, "starchat") == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nFix f.<|end|>\n"
        "<|assistant|>\ndef f(): pass<|end|>\n<|user|>\nAgain.<|end|>\n<|assistant|>\n")
    assert render_chat(messages[1:2], "starchat") == "<|user|>\nFix f.<|end|>\n<|assistant|>\n"


def test_starchat_render_with_answer_span():
    messages = [{"role": "user", "content": "Fix f."}, {"role": "assistant", "content": "Fix f."}]
    text, start = render_with_answer(messages, "starchat")
    assert text == "<|user|>\nFix f.<|end|>\n<|assistant|>\nFix f.<|end|>\n"
    # The answer equals the question here, so a naive text.find(answer) would pick the wrong span.
    assert start == len("<|user|>\nFix f.<|end|>\n<|assistant|>\n")
    assert text[:start] == render_chat(messages[:1], "starchat")
    assert text[start:] == "Fix f.<|end|>\n"


def test_template_render_and_answer_span(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "def f(): pass"}]
    prompt = render_chat(messages[:1], "template", tokenizer)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    text, start = render_with_answer(messages, "template", tokenizer)
    assert text == prompt + "def f(): pass<|im_end|>\n"
    assert start == len(prompt)


def test_render_errors(tokenizer):
    with pytest.raises(ValueError, match="chat_format"):
        render_chat(CONVS[0], "chatml", tokenizer)
    with pytest.raises(ValueError, match="ending with an assistant"):
        render_with_answer(CONVS[0], "starchat")
    with pytest.raises(ValueError, match="role"):
        render_chat([{"role": "tool", "content": "x"}], "starchat")


def test_stop_strings_and_special_tokens(tokenizer):
    assert stop_strings("starchat") == ("<|end|>",)
    assert stop_strings("template", tokenizer) == ("<|im_end|>",)  # the tiny EOS is the turn end too
    assert needs_special_tokens("starchat") and not needs_special_tokens("template")


def test_light_modules_import_without_torch():
    code = ("import sys, selfdebug.chat, selfdebug.generation; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- interface ------------------------------------------------------------------------------------

def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(n=0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)
    with pytest.raises(TypeError):
        SamplingParams(stop="<|end|>")


def test_make_generator_unknown_backend():
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_generator("tgi", "x")


# ---- HF backend -----------------------------------------------------------------------------------

def test_n_completions_per_conversation(gen):
    # 3 conversations x n=3 = 9 rows in batches of 4: the last batch is partial.
    out = gen.generate(CONVS, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=0))
    assert [len(c) for c in out] == [3, 3, 3]
    for completions in out:
        for c in completions:
            assert isinstance(c, Completion)
            assert 1 <= c.n_tokens <= 8 and c.n_tokens == len(c.token_ids)
            assert c.finish_reason in ("stop", "length")


def test_seed_reproduces_and_differs(gen):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=7)
    first = gen.generate(CONVS[:2], params)
    assert gen.generate(CONVS[:2], params) == first
    other = gen.generate(CONVS[:2], SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=8))
    assert other != first
    # n samples of one prompt are not copies of each other
    assert len({c.token_ids for c in first[0]}) > 1


def test_greedy_is_deterministic_across_seeds(gen):
    a = gen.generate(CONVS, greedy(seed=1))
    b = gen.generate(CONVS, greedy(seed=2))
    assert a == b


def test_greedy_same_with_and_without_padding(tiny_model_dir, gen):
    # Batch 1 has no padding; batch 4 left-pads the shorter prompts. Same tokens => padding is masked.
    single = make_generator("hf", tiny_model_dir, dtype="float32", batch_size=1)
    assert single.generate(CONVS, greedy(max_new_tokens=10)) == gen.generate(CONVS, greedy(max_new_tokens=10))


def test_max_new_tokens_gives_length(gen):
    out = gen.generate(CONVS, greedy(max_new_tokens=5))
    for [c] in out:
        assert c.finish_reason == "length" and c.n_tokens == 5 and len(c.token_ids) == 5
    sampled = gen.generate(CONVS, SamplingParams(n=4, temperature=1.0, max_new_tokens=7, seed=3))
    for c in (c for cs in sampled for c in cs):
        assert c.n_tokens <= 7
        assert c.finish_reason == "stop" or c.n_tokens == 7


def test_stop_string_truncates_and_stops_early(gen, tokenizer):
    [[full]] = gen.generate(CONVS[:1], greedy(max_new_tokens=24))
    assert full.finish_reason == "length"
    stop = full.text[len(full.text) // 2:][:2]  # a 2-char piece from the middle of the greedy text
    [[cut]] = gen.generate(CONVS[:1], greedy(max_new_tokens=24, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:full.text.index(stop)]
    assert cut.n_tokens < full.n_tokens  # generation stopped early, it did not just trim the text
    assert cut.token_ids == full.token_ids[:cut.n_tokens]
    # token_ids end with the token that completed the stop string, and no later one
    assert stop in tokenizer.decode(list(cut.token_ids))
    assert stop not in tokenizer.decode(list(cut.token_ids[:-1]))


def test_finish_cuts_at_eos_and_padding(gen, tokenizer):
    a, b = tokenizer.convert_tokens_to_ids(["def", "Ġadd"])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    c = gen._finish([a, b, eos, pad, pad], stop=())
    assert c == Completion("def add", 3, "stop", (a, b, eos))
    # a stop string ends the row before EOS; the padding after it is dropped
    c = gen._finish([a, b, a, pad, pad], stop=(" add",))
    assert c == Completion("def", 2, "stop", (a, b))


def test_live_model_object_and_training_mode(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.train()
    gen = make_generator("hf", model=model, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
                         chat_format="starchat", batch_size=2)
    [[c]] = gen.generate(CONVS[:1], greedy(max_new_tokens=4))
    assert c.n_tokens <= 4
    assert model.training  # restored after generating in eval mode
    assert gen.turn_stops == ("<|end|>",)


@pytest.mark.parametrize("native_bf16", [False, True])
def test_load_dtype_auto_follows_the_cpu(monkeypatch, native_bf16):
    """"auto": the checkpoint's dtype on a GPU and on a CPU with bf16 in hardware; float32 on a CPU
    that would emulate bf16 (2-3x slower)."""
    import torch

    from selfdebug.generation import hf

    monkeypatch.setattr(hf, "cpu_has_native_bf16", lambda: native_bf16)
    assert hf.load_dtype("auto", "cpu") == ("auto" if native_bf16 else torch.float32)
    assert hf.load_dtype("auto", "cuda") == "auto"  # GPU: the checkpoint's dtype
    assert hf.load_dtype("bfloat16", "cpu") is torch.bfloat16
    assert hf.load_dtype("float32", "cpu") is torch.float32
    with pytest.raises(ValueError, match="dtype"):
        hf.load_dtype("fp8", "cpu")


def test_int8_quantized_sampling_on_cpu(tiny_model_dir):
    """backend.quantize=int8: every linear layer becomes a dynamic int8 one, and it samples."""
    import torch

    from selfdebug.generation import SamplingParams
    from selfdebug.generation.hf import HFGenerator, quantize_for_cpu

    plain = HFGenerator(tiny_model_dir, device="cpu", batch_size=2)
    quant = HFGenerator(tiny_model_dir, device="cpu", batch_size=2, quantize="int8")
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in plain.model.modules())
    qlinear = torch.ao.nn.quantized.dynamic.Linear
    assert n_linear > 0 and sum(isinstance(m, qlinear) for m in quant.model.modules()) == n_linear
    [[completion]] = quant.generate([[{"role": "user", "content": "def add(a, b):"}]],
                                    SamplingParams(n=1, temperature=0.0, max_new_tokens=6))
    assert completion.n_tokens > 0
    with pytest.raises(ValueError, match="expected null or one of"):
        quantize_for_cpu(plain.model, "int4", torch.device("cpu"))
    with pytest.raises(ValueError, match="for CPU inference"):
        quantize_for_cpu(plain.model, "int8", torch.device("cuda"))


def test_temperature_top_p_equals_transformers_warpers():
    """TemperatureTopP (nucleus among the top k, full sort as the fallback) keeps exactly the
    tokens transformers' TemperatureLogitsWarper + TopPLogitsWarper keep, on peaked and flat rows."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from selfdebug.generation.hf import TemperatureTopP

    torch.manual_seed(0)
    peaked = torch.randn(6, 5000) * 4
    flat = torch.randn(4, 5000) * 0.01  # the nucleus needs far more than k tokens: the fallback
    scores = torch.cat([peaked, flat])
    for temperature, top_p in ((0.8, 0.95), (1.0, 0.5), (0.3, 0.99)):
        ref = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
        ours = TemperatureTopP(temperature, top_p, k=64)(None, scores.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))
        kept = ~torch.isinf(ref)
        assert torch.allclose(ours[kept], ref[kept])
        assert (~torch.isinf(ours[6:])).sum() > 64 * 4  # flat rows really went past the top k
    same = TemperatureTopP(0.5, 1.0)(None, scores.clone())
    assert torch.allclose(same, scores / 0.5)  # top_p = 1: temperature only


def test_every_backend_setting_is_its_constructors_argument():
    """Each backend's config schema holds exactly what its generator reads: build_generator passes
    every field as it is (engine_settings) but the caller's own (batch_size, the rows per call,
    reaches the HF backend only; vLLM's merge_lora picks the model folder)."""
    import inspect

    from selfdebug.config import BACKENDS
    from selfdebug.generation import engine_settings
    from selfdebug.generation.hf import HFGenerator
    from selfdebug.generation.llamacpp import LlamaCppGenerator
    from selfdebug.generation.openai import OpenAIGenerator
    from selfdebug.generation.vllm import VLLMGenerator

    classes = {"hf": HFGenerator, "vllm": VLLMGenerator, "openai": OpenAIGenerator, "llamacpp": LlamaCppGenerator}
    assert set(classes) == set(BACKENDS)
    for name, schema in BACKENDS.items():
        fields = set(engine_settings(schema())) | ({"batch_size"} if name == "hf" else set())
        assert "name" not in fields and (name != "vllm" or "merge_lora" not in fields)
        params = set(inspect.signature(classes[name].__init__).parameters)
        assert fields <= params, (name, fields - params)

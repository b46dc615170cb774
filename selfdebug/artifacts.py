"""Append-only JSONL logs that a rerun resumes from.

Every long loop (sampling, execution, collection, evaluation) appends one record per finished unit
of work and, on restart, skips the units whose keys are already in the log:

    log = JsonlLog(run_dir / "samples.jsonl")
    done = log.keys(lambda r: (r["task_id"], r["sample_idx"]))
    for ...:
        if key not in done:
            log.append(record)

Crash safety: each `append` writes its records with ONE write() and fsyncs before returning, so a
SIGKILL or power loss loses at most the call in flight. The only damage that can leave is a last
line without its newline; opening the log cuts it off (with a warning). Earlier lines are never
rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlLog:
    """One JSON object per line, UTF-8, append-only. See the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Cut off a last line that lacks its newline: the record a crash interrupted."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # Find the last newline by reading backwards in blocks (records can be large).
            end = size
            last_newline = -1
            while end > 0 and last_newline < 0:
                start = max(0, end - 65536)
                f.seek(start)
                block = f.read(end - start)
                idx = block.rfind(b"\n")
                if idx >= 0:
                    last_newline = start + idx
                end = start
            keep = last_newline + 1  # 0 when the file holds a single, partial line
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        log.warning("%s: dropped a truncated last line (%d bytes), left by an interrupted write",
                    self.path, size - keep)

    def read(self) -> list[dict[str, Any]]:
        """All records, in the order they were appended. [] when the file does not exist yet."""
        if not self.path.exists():
            return []
        records = []
        # Split on b"\n" only: str.splitlines() would also split inside strings on U+2028 etc.,
        # which ensure_ascii=False leaves unescaped.
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise ValueError(
                        f"{self.path}:{lineno}: not a JSON record ({e}). Only a crash mid-write of "
                        f"the LAST line is repaired automatically; fix or remove this line by hand."
                    ) from None
                if not isinstance(record, dict):
                    raise ValueError(f"{self.path}:{lineno}: expected a JSON object, got "
                                     f"{type(record).__name__}")
                records.append(record)
        return records

    def keys(self, field_or_fn: str | Callable[[dict[str, Any]], Hashable]) -> set:
        """The resume keys of the records already logged: `record[field]`, or `fn(record)`."""
        if callable(field_or_fn):
            return {field_or_fn(record) for record in self.read()}
        field = field_or_fn
        keys = set()
        for i, record in enumerate(self.read()):
            if field not in record:
                raise KeyError(f"{self.path}: record {i} has no field {field!r}")
            keys.add(record[field])
        return keys

    def append(self, records: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        """Append one record (a dict) or several, durably (fsync) before returning.

        Every record is serialized before anything is written, so a record that is not
        JSON-serializable raises here and leaves the file unchanged.
        """
        if isinstance(records, Mapping):
            records = [records]
        lines = []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise TypeError(f"record {i} must be a dict, got {type(record).__name__}")
            try:
                lines.append(json.dumps(dict(record), ensure_ascii=False) + "\n")
            except (TypeError, ValueError) as e:
                raise TypeError(f"record {i} is not JSON-serializable: {e}") from None
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        # O_APPEND: every write lands at the current end, even with another writer on the file.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # write() may write less than asked (signals, huge buffers)
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)


def read_jsonl(path: str | Path, error: type[Exception], fix: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSONL file a user pointed us at.
    A line that is not JSON raises `error` naming the file, the line and `fix` (what to do about it).
    For our own append-only logs use JsonlLog, which also repairs a torn last line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}, line {lineno}: not JSON ({exc.msg}); {fix}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a derived file (metrics, configs, datasets rebuilt from the logs) via a temp file +
    rename, so a crash never leaves a half-written file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

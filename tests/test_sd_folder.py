"""Reading a Stable Diffusion folder: layouts, safetensors only, fp16 upcast, shards, memory (issue 21)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from genlab.errors import GenlabError
from genlab.nn import sd_folder


def _checkpoint(root):
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def test_a_diffusers_folder_is_found_as_given(tmp_path):
    folder = _checkpoint(tmp_path / "sd")
    assert sd_folder.find_sd_folder(folder) == folder and sd_folder.is_sd_folder(folder)
    assert not sd_folder.is_sd_folder(tmp_path)


def test_the_hub_cache_gives_the_snapshot_refs_main_names(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--org--sd"
    old, new = _checkpoint(repo / "snapshots" / "aaa"), _checkpoint(repo / "snapshots" / "bbb")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaa\n")
    assert sd_folder.find_sd_folder(repo) == old
    (repo / "refs" / "main").write_text("../../elsewhere")  # not a revision: the newest snapshot instead
    assert sd_folder.find_sd_folder(repo) in (old, new)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    assert sd_folder.find_sd_folder("org/sd").parent == repo / "snapshots"
    with pytest.raises(GenlabError, match="no model_index.json"):
        sd_folder.find_sd_folder("org/other")


def test_pickles_are_refused_with_how_to_convert(tmp_path):
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(GenlabError, match="pickle weights .*save_pretrained.*safe_serialization=True"):
        sd_folder.weight_files(tmp_path)


def test_fp16_weights_are_upcast_and_shards_joined(tmp_path):
    a, b = torch.randn(3, 2), torch.arange(4)
    save_file({"a": a.half()}, str(tmp_path / "model-1.safetensors"))
    save_file({"b": b}, str(tmp_path / "model-2.safetensors"))
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    (tmp_path / "model.fp16.safetensors.index.json").write_text(json.dumps(index))
    files = sd_folder.weight_files(tmp_path)
    assert [f.name for f in files] == ["model-1.safetensors", "model-2.safetensors"]
    state = sd_folder.load_weights(files)
    assert state["a"].dtype == torch.float32 and torch.equal(state["a"], a.half().float())
    assert state["b"].dtype == torch.int64  # integers stay as they are
    assert sd_folder.weight_bytes(files) == 6 * 4 + 4 * 8


def test_a_shard_outside_the_folder_is_refused(tmp_path):
    index = {"weight_map": {"a": "../x.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(GenlabError, match="outside"):
        sd_folder.weight_files(tmp_path)


def test_too_little_memory_is_said_before_loading(monkeypatch):
    monkeypatch.setattr(sd_folder, "available_memory", lambda: 2**30)  # a smaller machine
    with pytest.raises(GenlabError, match="needs 4.0 GiB .* has 1.0 GiB available"):
        sd_folder.check_memory(4 * 2**30, "the U-Net")
    sd_folder.check_memory(2**29, "the U-Net")


def test_damaged_json_and_huge_json_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GenlabError, match="not valid JSON"):
        sd_folder.read_json(tmp_path / "config.json", "U-Net config")
    monkeypatch.setattr(sd_folder, "MAX_JSON_BYTES", 4)
    with pytest.raises(GenlabError, match="too large"):
        sd_folder.read_json(tmp_path / "config.json", "U-Net config")


def test_the_machines_available_memory_is_read():
    free = sd_folder.available_memory()
    assert free is None or free > 2**20

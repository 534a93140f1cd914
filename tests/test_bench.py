"""The benchmark's parts on hand-checkable cases, and `genlab bench diffusion` end to end at a tiny size."""

from __future__ import annotations

import json
import mmap
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from genlab.bench import diffusion as bench_diffusion
from genlab.bench.flops import count_flops, forward_flops_per_image
from genlab.bench.timing import matmul_peak_gflops, time_interleaved
from genlab.cli import cli

TINY = ["--device", "cpu", "--image-size", "8", "--batch-size", "2", "--sample-batch-size", "2"]
TINY += ["--repeats", "1", "--matmul-size", "64", "--threads", "1", "--no-peer-compile"]


def test_flops_of_linear_is_two_per_multiply_add():
    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 16 * 8
    assert forward_flops_per_image(layer, x) == 2 * 16 * 8


def test_flops_of_conv2d_match_the_hand_formula():
    conv = nn.Conv2d(3, 5, kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    out_side = (9 + 2 * 1 - 3) // 2 + 1  # 5
    assert conv(x).shape[-1] == out_side
    # 2 FLOPs x N x C_out x H_out x W_out x (C_in x k x k)
    assert count_flops(lambda: conv(x)) == 2 * 2 * 5 * out_side * out_side * 3 * 3 * 3


def test_flops_of_attention_count_both_products():
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 6)
    # Q K^T: 2 b h s_q s_k d ; P V: 2 b h s_q s_k d_v
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * 2 * 5 * 7 * (4 + 6)


def test_interleaved_timer_calls_each_candidate_in_turn():
    calls: list[str] = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    timings = time_interleaved(candidates, repeats=3, warmup=2)
    assert set(timings) == {"a", "b", "c"}
    assert all(len(t.samples) == 3 and t.median >= 0 for t in timings.values())
    assert calls == ["a", "b", "c"] * 5  # 2 warm-up rounds, then 3 timed, interleaved


def test_interleaved_timer_number_and_bad_arguments():
    calls: list[int] = []
    timings = time_interleaved({"x": lambda: calls.append(1)}, repeats=2, warmup=0, number=4)
    assert len(calls) == 8 and len(timings["x"].samples) == 2
    with pytest.raises(ValueError):
        time_interleaved({"x": lambda: None}, repeats=0)


def test_matmul_peak_is_positive():
    assert matmul_peak_gflops(n=64, repeats=2) > 0


def test_bench_diffusion_end_to_end_writes_json(tmp_path):
    out = tmp_path / "r.json"
    threads = torch.get_num_threads()
    result = CliRunner().invoke(cli, ["bench", "diffusion", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads  # restored
    data = json.loads(out.read_text())
    ours = data["models"]["ours"]
    assert ours["train_images_per_s"] > 0 and ours["sample_ms_per_image"] > 0
    assert ours["dpm_solver_cfg_ms_per_image"] == pytest.approx(40 * ours["sample_ms_per_image"])
    assert ours["train_flops_per_image"] == pytest.approx(3 * ours["forward_flops_per_image"])
    assert data["peak"]["gflops"] > 0 and data["machine"]["threads"] == 1
    assert len(data["peak"]["gflops_interleaved"]) == 2  # one product per round, 1 round per phase
    assert "train images/s" in result.output and str(out) in result.output
    if "diffusers" in data["models"]:
        assert data["ratios_ours_over_diffusers"]["params"] == pytest.approx(1, abs=0.1)


def test_bench_diffusion_without_diffusers_measures_ours_and_says_how_to_add_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now fails as if absent
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["bench", "diffusion", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pip install -e '.[bench]'" in result.output and "make bench" in result.output
    data = json.loads(out.read_text())
    assert list(data["models"]) == ["ours"] and data["ratios_ours_over_diffusers"] == {}


def test_diffusers_failing_to_import_is_one_line(monkeypatch):
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "diffusers":
                raise RuntimeError("incompatible huggingface_hub\nsecond line")
            return None

    monkeypatch.delitem(sys.modules, "diffusers", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    module, message = bench_diffusion.load_diffusers()
    assert module is None
    assert "failed to import" in message and "incompatible huggingface_hub" in message
    assert "\n" not in message


def test_diffusers_unet_matches_our_size_and_shape():
    diffusers = pytest.importorskip("diffusers")
    from genlab.cli.bench import _unet_config

    config = _unet_config(28)
    ours = bench_diffusion.ours(config)
    kwargs, params = bench_diffusion.match_diffusers_unet(diffusers, config, ours.params)
    assert abs(params / ours.params - 1) < 0.1
    assert len(kwargs["block_out_channels"]) == 3 and kwargs["num_class_embeds"] == 10
    assert kwargs["down_block_types"][-1] == "AttnDownBlock2D"  # attention at the lowest resolution
    assert kwargs["up_block_types"][0] == "AttnUpBlock2D"

    small = _unet_config(8)
    theirs = bench_diffusion.theirs(diffusers, small, bench_diffusion.ours(small).params)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 700.0]), torch.tensor([0, 9])
    assert theirs.predict(x, t, y).shape == x.shape


def test_bench_profile_groups_the_step_by_kind_of_operator():
    from genlab.bench.profile import _kind

    assert _kind("aten::convolution_backward") == "convolutions"
    assert _kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert _kind("aten::native_group_norm") == "normalisation"
    assert _kind("aten::something_new") == "other"
    result = CliRunner().invoke(
        cli, ["bench", "profile", "--steps", "1", "--batch-size", "2", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "convolutions" in result.output and "ms of CPU per step" in result.output
    bad = CliRunner().invoke(cli, ["bench", "profile", "--steps", "0"])
    assert bad.exit_code == 2 and "--steps" in bad.output


def test_sd_bench_times_both_unets_with_the_same_weights():
    pytest.importorskip("diffusers")
    from genlab.bench.sd import SDBenchSettings, format_sd_table, peak_growth, run_sd_bench

    tiny = {
        "block_out_channels": [8, 16],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "cross_attention_dim": 12,
        "attention_head_dim": 2,
    }
    result = run_sd_bench(SDBenchSettings(sizes=(64,), precisions=("fp32",), repeats=1, warmup=0, unet=tiny))
    (row,) = result["results"]
    assert row["max_abs_difference"] < 1e-4  # the same network, computed by both
    assert set(row["seconds_per_step"]) == {"genlab", "diffusers"} and row["ratio_ours_over_diffusers"] > 0
    assert "genlab" in format_sd_table(result) and row["gflop_per_step"] > 0

    # the peak a call adds is measured, not the memory the process already holds: 64 MiB of fresh pages
    # (an mmap; a tensor could reuse a free chunk of a heap that earlier tests left resident)
    def touch_64_mib() -> None:
        with mmap.mmap(-1, 64 * 2**20) as pages:
            for offset in range(0, len(pages), mmap.PAGESIZE):
                pages[offset] = 1

    grown = peak_growth(touch_64_mib)
    assert grown is None or 48 * 2**20 < grown < 512 * 2**20

"""Stable Diffusion's U-Net in genlab (genlab.nn.sd_unet) against diffusers' UNet2DConditionModel.

The reference is built with random weights from tiny configs that mirror SD 1.5 and SD 2.1 field for
field (only widths and depth shrunk), saved with ``save_pretrained`` as a checkpoint folder would be,
and its safetensors loaded into genlab's network with ``strict=True``.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time

import pytest
import torch

from genlab.bench.sd import SD15_UNET
from genlab.errors import GenlabError
from genlab.nn import sd_blocks
from genlab.nn.embeddings import sinusoidal_embedding
from genlab.nn.sd_blocks import SDAttention, scaled_attention
from genlab.nn.sd_unet import DIFFUSERS_DEFAULTS, SDUNet, SDUNetConfig, timestep_embedding

diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# SD 1.5's unet/config.json with the widths shrunk: 320/640/1280/1280 -> 8/16/32/32, 32 GroupNorm groups
# -> 4, 8 heads -> 2, text width 768 -> 12.
SD15 = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [8, 16, 32, 32],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 4,
    "norm_eps": 1e-5,
    "cross_attention_dim": 12,
    "attention_head_dim": 2,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "upcast_attention": False,
    "resnet_time_scale_shift": "default",
}
# SD 2.1 (768-v): heads per block [5, 10, 20, 20] of 64 channels -> [1, 2, 4, 4] of 8, linear
# projections, attention upcast, text width 1024 -> 16. v-prediction is the scheduler's matter.
SD21 = SD15 | {
    "sample_size": 12,
    "attention_head_dim": [1, 2, 4, 4],
    "use_linear_projection": True,
    "upcast_attention": True,
    "cross_attention_dim": 16,
    "layers_per_block": 1,
}


# The unet/config.json files of SD 1.5 and SD 2.1 as published (diffusers 0.6 and 0.10 wrote them).
REAL_SD15 = SD15_UNET  # genlab bench sd times this one
REAL_SD21 = REAL_SD15 | {
    "_diffusers_version": "0.10.0.dev0",
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "sample_size": 96,
    "use_linear_projection": True,
    "upcast_attention": True,
}


def save_reference(config: dict, folder, dtype: torch.dtype = torch.float32):
    """A diffusers U-Net with random weights from ``config``, saved into ``folder`` in ``dtype``; returned
    in float32 with the weights as saved."""
    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():  # diffusers starts some layers at zero; make every path count
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref.to(dtype).save_pretrained(folder, safe_serialization=True)
    return ref.float()


def load_net(folder, dtype: torch.dtype = torch.float32) -> SDUNet:
    """genlab's U-Net from a saved folder: its config.json, and its safetensors upcast to float32."""
    data = json.loads((folder / "config.json").read_text())
    net = SDUNet(SDUNetConfig.from_diffusers(data)).eval()
    state = safetensors_torch.load_file(folder / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in state.values()} == {dtype}
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return net


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder, diffusers reference), each reference built and saved once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            config, dtype = {"sd15": (SD15, torch.float32), "sd21": (SD21, torch.float32),
                             "sd15-fp16": (SD15, torch.float16)}[name]  # fmt: skip
            folder = tmp_path_factory.mktemp(name)
            cache[name] = folder, save_reference(config, folder, dtype)
        return cache[name]

    return get


def inputs(config: dict, side: tuple[int, int] = (16, 16), n: int = 2):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(n, 4, *side, generator=g)
    context = torch.randn(n, 7, config["cross_attention_dim"], generator=g)
    return sample, context


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_unet_matches_diffusers(saved, name):
    folder, ref = saved(name)
    net = load_net(folder)
    config = SD15 if name == "sd15" else SD21
    sample, context = inputs(config)
    t = torch.tensor([999, 10])
    with torch.no_grad():
        want = ref(sample, t, context).sample
        got = net(sample, t, context)
        assert want.abs().mean() > 0.05  # a real signal, not zeros
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
        # one timestep for the whole batch: a 0-d tensor, an int, a float (diffusers' forms)
        same = net(sample[1:], torch.tensor(10), context[1:])
        assert torch.allclose(same, want[1:], atol=1e-4)
        assert torch.equal(net(sample[1:], 10, context[1:]), same)
        assert torch.equal(net(sample[1:], 10.0, context[1:]), same)
    if name == "sd15":
        with torch.no_grad():
            assert torch.allclose(net(sample, 17.5, context), ref(sample, 17.5, context).sample, atol=1e-4)


@pytest.mark.parametrize("config,parameters", [(REAL_SD15, 859_520_964), (REAL_SD21, 865_910_724)])
def test_real_configs_give_diffusers_names_and_shapes(config, parameters):
    """The full-size networks, built on the meta device (shapes, no storage): every state-dict key and
    shape of diffusers' U-Net, so the published safetensors load strictly."""
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
        net = SDUNet(SDUNetConfig.from_diffusers(config))
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(net) == shapes(ref)
    assert sum(p.numel() for p in net.parameters()) == parameters


def test_settings_left_out_mean_diffusers_defaults():
    """A config.json may omit keys; they then mean what UNet2DConditionModel's arguments default to."""
    signature = inspect.signature(diffusers.UNet2DConditionModel.__init__).parameters
    for key, value in DIFFUSERS_DEFAULTS.items():
        default = signature[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    cfg = SDUNetConfig.from_diffusers({"_class_name": "UNet2DConditionModel"})
    assert cfg.cross_attention_dim == (1280,) * 4 and cfg.num_attention_heads == (8,) * 4
    assert cfg.sample_size is None and cfg.layers_per_block == (2,) * 4


def test_unet_sides_not_divisible_by_its_downsampling(saved):
    """20 x 12 does not halve three times: the upsamplings aim at the skips' sizes, as in diffusers."""
    folder, ref = saved("sd21")
    net = load_net(folder)
    sample, context = inputs(SD21, side=(20, 12), n=1)
    with torch.no_grad():
        want = ref(sample, 300, context).sample
        got = net(sample, 300, context)
    assert got.shape == (1, 4, 20, 12)
    assert torch.allclose(got, want, atol=1e-4)


def test_fp16_checkpoint_upcast_to_fp32_loads(saved):
    folder, ref = saved("sd15-fp16")
    net = load_net(folder, torch.float16)
    sample, context = inputs(SD15, n=1)
    with torch.no_grad():
        assert torch.allclose(net(sample, 400, context), ref(sample, 400, context).sample, atol=1e-4)


def test_heads_are_read_as_diffusers_reads_them(saved):
    """`attention_head_dim` holds the number of heads; a list gives one per block and the mid block
    the last. Read any other way, the same weights compute something else: the parity test can fail."""
    net = SDUNet(SDUNetConfig.from_diffusers(SD21))
    heads = lambda block: block.attentions[0].transformer_blocks[0].attn1.heads  # noqa: E731
    assert [heads(b) for b in net.down_blocks[:3]] == [1, 2, 4]
    assert heads(net.mid_block) == 4
    assert [heads(b) for b in net.up_blocks[1:]] == [4, 2, 1]  # up block i mirrors down block 3 - i

    folder, ref = saved("sd15")
    wrong = SDUNet(SDUNetConfig.from_diffusers(SD15 | {"attention_head_dim": 4})).eval()
    wrong.load_state_dict(load_net(folder).state_dict(), strict=True)
    sample, context = inputs(SD15, n=1)
    with torch.no_grad():
        assert (wrong(sample, 100, context) - ref(sample, 100, context).sample).abs().max() > 1e-3


def test_timestep_embedding_is_diffusers_and_genlab_sinusoid():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    assert torch.equal(timestep_embedding(t, 8, True, 0.0), sinusoidal_embedding(t, 8))
    for flip, shift, dim in ((True, 0, 32), (False, 1, 32), (True, 1, 9)):
        want = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
        assert torch.allclose(timestep_embedding(t, dim, flip, shift), want, atol=1e-6)


def test_cross_attention_weights_are_kept_for_attention_maps(saved, monkeypatch):
    net = load_net(saved("sd15")[0])
    sample, context = inputs(SD15)
    cross = net.attention_layers(cross=True)
    assert len(cross) == 3 * 2 + 1 + 3 * 3 and all(m.is_cross for m in cross)
    assert not any(m.is_cross for m in net.attention_layers(cross=False))
    with torch.no_grad():
        plain = net(sample, 50, context)
        for m in cross:
            m.keep_weights = True
        monkeypatch.setattr(sd_blocks, "ATTENTION_CHUNK", 2 * 2 * 7 * 24)  # 24 queries at a time
        kept = net(sample, 50, context)
    assert torch.allclose(kept, plain, atol=1e-5)
    first = cross[0].weights  # 16 x 16 pixels over 7 tokens, 2 heads
    assert first.shape == (2, 2, 256, 7)
    assert torch.allclose(first.sum(-1), torch.ones(2, 2, 256), atol=1e-5)
    assert cross[-1].weights.shape == (2, 2, 256, 7)
    assert net.mid_block.attentions[0].transformer_blocks[0].attn2.weights.shape == (2, 2, 4, 7)


def test_attention_upcast_and_chunks_agree_with_the_formula(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g) for _ in range(3))
    weights = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
    monkeypatch.setattr(sd_blocks, "ATTENTION_CHUNK", 2 * 3 * 50 * 7)  # 7 queries at a time
    out, kept = scaled_attention(q, k, v, upcast=True, return_weights=True)
    assert torch.allclose(kept, weights, atol=1e-6) and torch.allclose(out, weights @ v, atol=1e-5)
    fused, none = scaled_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), upcast=True)
    assert none is None and fused.dtype == torch.bfloat16
    assert torch.allclose(fused.float(), weights @ v, atol=3e-2)


MEMORY_PROBE = """
import resource, torch
from genlab.nn.sd_blocks import scaled_attention
q, k, v = (torch.randn(2, 8, 4096, 40) for _ in range(3))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scaled_attention(q, k, v, upcast=True)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kilobytes is Linux's")
def test_self_attention_over_a_64x64_latent_never_holds_the_score_matrix():
    """Batch 2, 8 heads, 4096 positions: the (2, 8, 4096, 4096) scores would be 1 GiB in float32; the
    fused kernel's peak grows by a few megabytes (measured in a fresh process)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) < 300, out.stdout


def test_unet_runs_in_bf16_autocast_and_channels_last(saved):
    net = load_net(saved("sd21")[0])
    sample, context = inputs(SD21)
    with torch.no_grad():
        want = net(sample, 600, context)
        net_cl = net.to(memory_format=torch.channels_last)
        got = net_cl(sample.to(memory_format=torch.channels_last), 600, context)
        assert torch.allclose(got, want, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net_cl(sample.to(memory_format=torch.channels_last), 600, context)
    assert torch.isfinite(low).all()
    assert (low.float() - want).norm() / want.norm() < 0.05


def test_attention_module_is_what_attention_maps_expect():
    attn = SDAttention(16, heads=4, context_dim=6)
    attn.keep_weights = True
    out = attn(torch.randn(3, 10, 16), torch.randn(3, 5, 6))
    assert out.shape == (3, 10, 16) and attn.weights.shape == (3, 4, 10, 5) and attn.is_cross
    attn.keep_weights = False
    attn(torch.randn(3, 10, 16), torch.randn(3, 5, 6))
    assert attn.weights is None


@pytest.mark.parametrize(
    "change,words",
    [
        (
            {"down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["SimpleCrossAttnDownBlock2D"]},
            "`down_block_types`",
        ),
        ({"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}, "`mid_block_type`"),
        ({"up_block_types": ["AttnUpBlock2D"] * 4}, "`up_block_types`"),
        ({"class_embed_type": "timestep"}, "`class_embed_type`"),
        ({"addition_embed_type": "text_time"}, "`addition_embed_type`"),
        ({"only_cross_attention": [False, True, False, False]}, "`only_cross_attention`"),
        ({"resnet_time_scale_shift": "scale_shift"}, "`resnet_time_scale_shift`"),
        ({"conv_in_kernel": 5}, "`conv_in_kernel`"),
        ({"act_fn": "gelu"}, "`act_fn`"),
        ({"attention_head_dim": [1, 2, 4]}, "`num_attention_heads` has 3 entries"),
        ({"attention_head_dim": 3}, "attention heads"),
        ({"block_out_channels": [8, 16, 30, 32]}, "GroupNorm"),
        ({"block_out_channels": "wide"}, "block_out_channels"),
        ({"layers_per_block": 10**9}, "`layers_per_block`"),
        ({"layers_per_block": 60, "transformer_layers_per_block": 60}, "layers"),
        ({"some_new_setting": 1}, "some_new_setting"),
        ({"block_out_channels": [65536] * 4, "norm_num_groups": 32}, "billion parameters"),
        ({"block_out_channels": [10**9] * 4}, "`block_out_channels`"),
    ],
)
def test_bad_configs_are_one_line_errors_before_allocating(change, words):
    start = time.perf_counter()
    with pytest.raises(GenlabError, match=words) as info:
        SDUNet(SDUNetConfig.from_diffusers(SD15 | change))
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 10  # sized on the meta device, never allocated

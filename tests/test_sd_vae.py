"""Stable Diffusion's KL autoencoder in genlab (genlab.nn.sd_vae) against diffusers' AutoencoderKL.

The reference has random weights and a tiny config mirroring SD's (four levels, f = 8, 4 latent
channels; widths 128/256/512/512 -> 8/16/32/32), saved with ``save_pretrained`` and loaded into genlab's
network with ``strict=True``.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from genlab.errors import GenlabError
from genlab.nn.sd_vae import SDAutoencoder, SDVAEConfig, convert_legacy_attention

diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 16, 32, 32],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}
# Another setting of every switch: no attention in the mid blocks, no 1x1 convolutions around the
# latent, SDXL's scaling factor, one ResBlock per level.
VARIANT = SD_VAE | {
    "mid_block_add_attention": False,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 0.13025,
    "layers_per_block": 1,
}


# vae/config.json of SD 1.5 as published (2.x's differs only in sample_size, 768).
REAL_SD = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def save_reference(config: dict, folder, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**config).eval()
    ref.to(dtype).save_pretrained(folder, safe_serialization=True)
    return ref.float()


def load_net(folder, state: dict | None = None) -> SDAutoencoder:
    net = SDAutoencoder(SDVAEConfig.from_diffusers(json.loads((folder / "config.json").read_text()))).eval()
    state = state or safetensors_torch.load_file(folder / "diffusion_pytorch_model.safetensors")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return net


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cache = {}

    def get(name: str):
        if name not in cache:
            config, dtype = {
                "sd": (SD_VAE, torch.float32),
                "variant": (VARIANT, torch.float32),
                "sd-fp16": (SD_VAE, torch.float16),
            }[name]
            folder = tmp_path_factory.mktemp(name)
            cache[name] = folder, save_reference(config, folder, dtype)
        return cache[name]

    return get


def images(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("name", ["sd", "variant"])
def test_encode_and_decode_match_diffusers(saved, name):
    folder, ref = saved(name)
    net = load_net(folder)
    assert net.scaling_factor == (0.18215 if name == "sd" else 0.13025)
    x = images()
    with torch.no_grad():
        want = ref.encode(x).latent_dist
        got = net.encode(x)
        assert got.mean.shape == (2, 4, 4, 4)
        assert torch.allclose(got.mean, want.mean, atol=1e-4)
        assert torch.allclose(got.logvar, want.logvar, atol=1e-4)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        assert torch.allclose(got.sample(g1), want.sample(g2), atol=1e-4)
        z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
        decoded = net.decode(z)
        assert decoded.shape == (2, 3, 32, 32)
        assert torch.allclose(decoded, ref.decode(z).sample, atol=1e-4)
        assert torch.allclose(net(x), ref(x).sample, atol=1e-4)


def test_real_config_gives_diffusers_names_and_shapes():
    """The full-size autoencoder on the meta device: diffusers' keys and shapes, 83.7M parameters, and
    SD's scale factor when the config (written before diffusers had the field) does not say it."""
    with torch.device("meta"):
        ref = diffusers.AutoencoderKL(**{k: v for k, v in REAL_SD.items() if not k.startswith("_")})
        net = SDAutoencoder(SDVAEConfig.from_diffusers(REAL_SD))
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert sum(p.numel() for p in net.parameters()) == 83_653_863
    assert net.scaling_factor == 0.18215 and net.config.downsampling == 8


def test_settings_left_out_mean_diffusers_defaults():
    cfg = SDVAEConfig.from_diffusers({})
    ref = diffusers.AutoencoderKL.from_config({})
    assert {k: v.shape for k, v in SDAutoencoder(cfg).state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert cfg.sample_size == ref.config.sample_size and cfg.scaling_factor == ref.config.scaling_factor


def test_fp16_checkpoint_upcast_to_fp32_loads(saved):
    folder, ref = saved("sd-fp16")
    net = load_net(folder)
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(net.decode(z), ref.decode(z).sample, atol=1e-4)


def test_tiled_decoding_is_diffusers_tiled_decode(saved):
    """Tiles of 4 latent pixels overlapping by a quarter: what diffusers' enable_tiling computes, not the
    untiled image (each tile is decoded on its own), and the untiled one when the latent fits a tile."""
    folder, ref = saved("sd")
    net = load_net(folder)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref.enable_tiling()
    ref.tile_latent_min_size, ref.tile_sample_min_size = 4, 32
    with torch.no_grad():
        tiled = net.decode(z, tile=4)
        assert tiled.shape == (1, 3, 64, 64)
        assert torch.allclose(tiled, ref.decode(z).sample, atol=1e-4)
        assert (tiled - net.decode(z)).abs().max() > 1e-3
        assert torch.equal(net.decode(z, tile=8), net.decode(z))


def test_legacy_attention_names_are_converted(saved):
    """The mid blocks' attention as old checkpoints store it: query/key/value/proj_attn, here with the
    1x1-convolution shapes (C, C, 1, 1) of the original latent-diffusion weights."""
    folder, ref = saved("sd")
    state = safetensors_torch.load_file(folder / "diffusion_pytorch_model.safetensors")
    legacy = {}
    for key, value in state.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if ".attentions.0." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        legacy[key] = value
    assert "encoder.mid_block.attentions.0.query.weight" in legacy
    assert legacy["decoder.mid_block.attentions.0.proj_attn.weight"].shape == (32, 32, 1, 1)
    converted = convert_legacy_attention(legacy)
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], state[k]) for k in state)
    net = load_net(folder, converted)
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(net.decode(z), ref.decode(z).sample, atol=1e-4)


def test_autoencoder_runs_in_bf16_autocast_and_channels_last(saved):
    net = load_net(saved("sd")[0]).to(memory_format=torch.channels_last)
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = net.decode(z)
        got = net.decode(z.to(memory_format=torch.channels_last))
        assert torch.allclose(got, want, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net.decode(z)
    assert (low.float() - want).norm() / want.norm() < 0.05


@pytest.mark.parametrize(
    "change,words",
    [
        ({"down_block_types": ["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"]}, "`down_block_types`"),
        ({"up_block_types": ["UpDecoderBlock2D"] * 3}, "`up_block_types` has 3 entries"),
        ({"act_fn": "relu"}, "`act_fn`"),
        ({"shift_factor": 0.0609}, "`shift_factor`"),
        ({"latents_mean": [0.0] * 4}, "`latents_mean`"),
        ({"block_out_channels": [8, 16, 30, 32]}, "GroupNorm"),
        ({"layers_per_block": "2"}, "layers_per_block"),
        ({"new_thing": True}, "new_thing"),
        ({"block_out_channels": [65536] * 4, "norm_num_groups": 32}, "billion parameters"),
    ],
)
def test_bad_configs_are_one_line_errors_before_allocating(change, words):
    start = time.perf_counter()
    with pytest.raises(GenlabError, match=words) as info:
        SDAutoencoder(SDVAEConfig.from_diffusers(SD_VAE | change))
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 10

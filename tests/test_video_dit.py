"""The transformer on spacetime patches: shapes, patchify/unpatchify as inverses, the image DiT recovered
exactly at one frame, full spacetime attention, config errors, and the save/load round trip."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import GenlabError
from genlab.nn.dit import DiT
from genlab.nn.video_dit import (
    VideoDiT,
    VideoDiTConfig,
    patchify_video,
    positions_time,
    unpatchify_video,
)


def _randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Every weight random: adaLN-Zero starts the output at zero, which would hide what a test checks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def _tiny(**kw) -> VideoDiTConfig:
    base = dict(in_channels=2, frames=4, image_size=8, tubelet=2, patch_size=4, width=16, depth=1, heads=2)
    return VideoDiTConfig(**{**base, **kw})


@pytest.mark.parametrize(("frames", "t", "p"), [(4, 1, 2), (4, 2, 4), (6, 3, 2), (2, 2, 8)])
def test_output_shape(frames, t, p):
    cfg = _tiny(frames=frames, tubelet=t, patch_size=p, out_channels=3)
    net = VideoDiT(cfg)
    _randomise(net)
    x = torch.randn(2, frames, 2, 8, 8)
    out = net(x, torch.tensor([3.0, 70.0]))
    assert out.shape == (2, frames, 3, 8, 8)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    # a shorter clip (a multiple of t) goes through the same network
    assert net(x[:, :t], torch.tensor(5.0)).shape == (2, t, 3, 8, 8)


@pytest.mark.parametrize(("frames", "c", "t", "p"), [(4, 3, 2, 2), (6, 1, 3, 4), (1, 2, 1, 8)])
def test_patchify_and_unpatchify_are_inverses(frames, c, t, p):
    x = torch.randn(2, frames, c, 8, 8)
    tokens = patchify_video(x, t, p)
    g = 8 // p
    assert tokens.shape == (2, frames // t * g * g, t * c * p * p)
    assert torch.equal(unpatchify_video(tokens, t, p, c, 8), x)
    # token (tau, row, col) is the tubelet of frames tau*t .. tau*t+t-1 at that row and column
    tau, row, col = frames // t - 1, g - 1, 0
    k = (tau * g + row) * g + col
    expected = x[1, tau * t : (tau + 1) * t, :, row * p : (row + 1) * p, col * p : (col + 1) * p]
    assert torch.equal(tokens[1, k].reshape(t, c, p, p), expected)


def test_one_frame_is_the_image_dit_exactly():
    cfg = _tiny(frames=4, tubelet=1, patch_size=2, num_classes=3, context_dim=8, depth=2)
    video = VideoDiT(cfg)
    image = DiT(cfg.image_config())
    _randomise(image, seed=1)
    video.dit.load_state_dict(image.state_dict())  # the video network's weights are the DiT's, by name
    x, t = torch.randn(3, 2, 8, 8), torch.tensor([1.0, 50.0, 900.0])
    labels, context = torch.tensor([0, 2, 3]), torch.randn(3, 5, 8)
    expected = image(x, t, labels, context)
    assert expected.abs().sum() > 0
    assert torch.equal(video(x[:, None], t, labels, context)[:, 0], expected)
    assert torch.equal(positions_time(4, 16)[0], torch.zeros(16))  # why: frame 0 has the DiT's positions
    assert not torch.equal(positions_time(4, 16)[1], torch.zeros(16))


def test_the_last_frame_reaches_the_first():
    torch.manual_seed(0)
    net = VideoDiT(_tiny(frames=4, tubelet=1, patch_size=4))
    _randomise(net)
    x = torch.randn(1, 4, 2, 8, 8)
    t = torch.tensor([10.0])
    moved = x.clone()
    moved[:, -1, :, :4, :4] += 1.0  # one token of the last frame
    before, after = net(x, t), net(moved, t)
    assert not torch.allclose(before[:, 0], after[:, 0])  # full spacetime attention: frame 0 sees it
    # and the time embedding tells frames apart: identical frames give different outputs
    same = net(x[:, :1].expand(1, 4, 2, 8, 8), t)
    assert not torch.allclose(same[:, 0], same[:, 1])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(frames=6, tubelet=4), "`frames` \\(6\\) must be a multiple of `tubelet` \\(4\\)"),
        (dict(image_size=8, patch_size=3), "`image_size` \\(8\\) must be a multiple of `patch_size`"),
        (dict(frames=0), "`frames` must be between 1 and 1024"),
        (dict(frames=5000), "`frames` must be between 1 and 1024"),
        (dict(tubelet=8), "`tubelet` must be between 1 and 4"),
        (dict(width=18, heads=2), "`width` must be a multiple of 4"),
        (dict(width=20, heads=8), "multiple of the heads"),
    ],
)
def test_bad_configs_are_one_line_errors(kw, message):
    with pytest.raises(GenlabError, match=message) as info:
        _tiny(**kw)
    assert "\n" not in str(info.value)


def test_bad_clips_are_one_line_errors():
    net = VideoDiT(_tiny())
    with pytest.raises(GenlabError, match="multiple of `tubelet`"):
        net(torch.randn(1, 3, 2, 8, 8), torch.tensor(1.0))
    with pytest.raises(GenlabError, match="up to `frames`"):
        net(torch.randn(1, 6, 2, 8, 8), torch.tensor(1.0))
    with pytest.raises(GenlabError, match="a clip must be"):
        net(torch.randn(1, 2, 8, 8), torch.tensor(1.0))


def test_sized_before_built():
    cfg = VideoDiTConfig(width=65536, depth=64, heads=1)
    with pytest.raises(GenlabError, match="billion parameters"):
        VideoDiT(cfg)


def test_save_and_load_round_trip(tmp_path):
    net = VideoDiT(_tiny(num_classes=2))
    _randomise(net)
    net.save_pretrained(tmp_path / "run")
    loaded = VideoDiT.from_pretrained(tmp_path / "run")
    assert loaded.config == net.config
    x, t = torch.randn(2, 4, 2, 8, 8), torch.tensor([4.0, 8.0])
    assert torch.equal(loaded(x, t, torch.tensor([0, 1])), net.eval()(x, t, torch.tensor([0, 1])))

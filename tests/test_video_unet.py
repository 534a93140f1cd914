"""The factorised space-time U-Net (Ho et al. 2022): shapes, a new network is the image U-Net frame by
frame, the temporal attention mixes frames in both directions and only when on, the relative position
bias is what breaks the symmetry between frame orders, conditioning reaches each clip's own frames."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from genlab.errors import GenlabError
from genlab.nn.unet import UNet, UNetConfig
from genlab.nn.video_unet import (
    VideoUNet,
    VideoUNetConfig,
    batch_to_frames,
    frames_to_batch,
)


def _config(**unet: object) -> VideoUNetConfig:
    settings = dict(
        in_channels=3, image_size=8, base_channels=8, channel_mults=(1, 2), head_dim=8, groups=4
    ) | dict(unet)
    return VideoUNetConfig(unet=UNetConfig(**settings), max_frames=8, temporal_levels=(0, 1), max_distance=3)  # type: ignore[arg-type]


def _perturb(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Add noise to every weight: the zero-initialised layers (outputs, attention projections, the
    position bias) become non-zero, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def _image_unet(video: VideoUNet) -> UNet:
    """A separate image U-Net holding a copy of the video U-Net's 2-D weights."""
    image = UNet(video.config.unet)
    image.load_state_dict(video.unet.state_dict())
    return image.eval()


def _per_frame(image: UNet, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
    frames = x.shape[1]
    return batch_to_frames(image(frames_to_batch(x), t.repeat_interleave(frames), **kwargs), frames)


@pytest.mark.parametrize("frames", [1, 4, 8])
@pytest.mark.parametrize(("h", "w"), [(8, 8), (12, 8), (6, 14)])
def test_output_shapes(frames, h, w):
    torch.manual_seed(0)
    net = VideoUNet(_config(out_channels=2)).eval()
    x = torch.randn(2, frames, 3, h, w)
    assert net(x, torch.tensor([1.0, 500.0])).shape == (2, frames, 2, h, w)
    assert net(x, torch.tensor(7.0)).shape == (2, frames, 2, h, w)  # one timestep for all
    assert net(x, torch.rand(2, frames) * 1000).shape == (2, frames, 2, h, w)  # one per frame


def test_frames_to_batch_and_back():
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert frames_to_batch(x)[4].tolist() == x[1, 1].tolist()  # frame i of clip n is row n * T + i
    assert torch.equal(batch_to_frames(frames_to_batch(x), 3), x)


@pytest.mark.parametrize("frames", [1, 4, 8])
def test_a_new_video_unet_is_the_image_unet_frame_by_frame(frames):
    torch.manual_seed(0)
    net = VideoUNet(_config()).eval()
    _perturb(net.unet, seed=1)  # trained 2-D weights; the temporal projections stay at their zero start
    x, t = torch.randn(2, frames, 3, 8, 8), torch.tensor([3.0, 300.0])
    assert torch.equal(net(x, t), _per_frame(_image_unet(net), x, t))


def test_with_temporal_off_each_frame_is_the_image_unets_output():
    torch.manual_seed(0)
    net = VideoUNet(_config()).eval()
    _perturb(net, seed=2)  # the temporal layers trained too
    image = _image_unet(net)
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([3.0, 300.0])
    assert torch.equal(net(x, t, temporal=False), _per_frame(image, x, t))
    assert not torch.allclose(net(x, t), _per_frame(image, x, t), atol=1e-3)
    # per clip: the first clip is a video, the second a clip of unrelated images
    mixed = net(x, t, temporal=torch.tensor([True, False]))
    assert torch.equal(mixed[1], _per_frame(image, x, t)[1])
    assert torch.allclose(mixed[0], net(x, t)[0], atol=1e-5)


def test_temporal_attention_mixes_frames_both_ways_only_when_on():
    torch.manual_seed(0)
    net = VideoUNet(_config()).eval()
    _perturb(net, seed=3)
    x, t = torch.randn(2, 5, 3, 8, 8), torch.tensor([10.0, 10.0])
    changed = x.clone()
    changed[:, -1] = torch.randn(2, 3, 8, 8)
    changed_first = x.clone()
    changed_first[:, 0] = torch.randn(2, 3, 8, 8)
    on = (net(x, t)[:, 0] - net(changed, t)[:, 0]).abs().amax()
    back = (net(x, t)[:, -1] - net(changed_first, t)[:, -1]).abs().amax()
    assert on > 1e-2 and back > 1e-2  # the last frame reaches the first and the first the last: not causal
    assert torch.equal(net(x, t, temporal=False)[:, 0], net(changed, t, temporal=False)[:, 0])
    keep = torch.tensor([True, False])
    a, b = net(x, t, temporal=keep), net(changed, t, temporal=keep)
    assert (a[0, 0] - b[0, 0]).abs().amax() > 1e-2 and torch.equal(a[1, 0], b[1, 0])


def test_position_bias_breaks_the_symmetry_between_frame_orders():
    torch.manual_seed(0)
    net = VideoUNet(_config()).eval()
    _perturb(net, seed=4)
    biases = [m.bias for m in net.modules() if hasattr(m, "position_bias")]
    assert len(biases) == 1 + 1 + 2 + 2 + 1  # 1 ResBlock per level down, 2 up, at both levels; the middle
    x, t = torch.randn(1, 6, 3, 8, 8), torch.tensor([50.0])
    reverse = torch.arange(5, -1, -1)
    assert (net(x[:, reverse], t) - net(x, t)[:, reverse]).abs().amax() > 1e-2
    with torch.no_grad():
        for bias in biases:
            bias.zero_()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(net(x[:, perm], t), net(x, t)[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net(x[:, reverse], t), net(x, t)[:, reverse], atol=1e-5, rtol=1e-5)


def test_position_bias_is_one_learned_value_per_clipped_offset():
    net = VideoUNet(_config())
    attn = net.mid_time.attn
    with torch.no_grad():
        attn.bias.copy_(torch.arange(attn.bias.numel(), dtype=torch.float32).reshape(attn.bias.shape))
    bias = attn.position_bias(6)  # max_distance 3: offsets -3..3 are columns 0..6
    assert bias.shape == (attn.heads, 6, 6)
    row = attn.bias.shape[1]
    assert bias[0, 0].tolist() == [3, 4, 5, 6, 6, 6]  # key j - query 0 = j, clipped at +3
    assert bias[0, 5].tolist() == [0, 0, 0, 1, 2, 3]  # offsets -5..0, clipped at -3
    assert bias[1, 2, 2].item() == row + 3  # head 1, offset 0


def test_class_conditional_clips_get_their_own_labels():
    torch.manual_seed(0)
    net = VideoUNet(_config(num_classes=3)).eval()
    _perturb(net, seed=5)
    x, t = torch.randn(2, 3, 3, 8, 8), torch.tensor([20.0, 20.0])
    labels = torch.tensor([0, 2])
    out = net(x, t, labels)
    assert torch.equal(
        net(x, t, labels, temporal=False),
        _per_frame(_image_unet(net), x, t, class_labels=labels.repeat_interleave(3)),
    )
    assert torch.equal(net(x, t, torch.tensor([0, 1]))[0], out[0])  # clip 1's label stays in clip 1
    assert (net(x, t, torch.tensor([0, 1]))[1] - out[1]).abs().amax() > 1e-3
    assert torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))  # None: the "no class" of guidance


def test_text_conditional_clips_attend_to_their_own_prompt():
    torch.manual_seed(0)
    net = VideoUNet(_config(context_dim=12)).eval()
    _perturb(net, seed=6)
    x, t = torch.randn(2, 3, 3, 8, 8), torch.tensor([20.0, 700.0])
    context, mask = torch.randn(2, 5, 12), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    out = net(x, t, context=context, context_mask=mask)
    assert out.shape == x.shape
    image = _per_frame(
        _image_unet(net),
        x,
        t,
        context=context.repeat_interleave(3, 0),
        context_mask=mask.repeat_interleave(3, 0),
    )
    assert torch.equal(net(x, t, context=context, context_mask=mask, temporal=False), image)
    other = context.clone()
    other[1] = torch.randn(5, 12)
    changed = net(x, t, context=other, context_mask=mask)
    assert torch.equal(changed[0], out[0]) and (changed[1] - out[1]).abs().amax() > 1e-3
    padded = context.clone()
    padded[1, 3:] = 100.0  # behind the mask: not seen
    assert torch.equal(net(x, t, context=padded, context_mask=mask), out)
    with pytest.raises(GenlabError, match="token states"):
        net(x, t)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = VideoUNet(_config(num_classes=2)).eval()
    _perturb(net, seed=7)
    net.save_pretrained(tmp_path / "run")
    loaded = VideoUNet.from_pretrained(tmp_path / "run")
    assert loaded.config == net.config and loaded.kind == "video"
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([5.0])
    assert torch.equal(loaded(x, t, torch.tensor([1])), net(x, t, torch.tensor([1])))
    with pytest.raises(GenlabError, match="not a 'diffusion' run"):
        UNet.from_pretrained(tmp_path / "run")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(max_frames=0), r"`max_frames` must be between 1 and 1024 \(got 0\)"),
        (dict(temporal_levels=(2,)), r"every `temporal_levels` entry must be between 0 and 1 \(got 2\)"),
        (dict(max_distance=0), r"`max_distance` must be between 1"),
        (dict(temporal_head_dim=3), r"`temporal_head_dim` 3 does not divide"),
    ],
)
def test_a_bad_config_is_a_one_line_error(settings, message):
    unet = UNetConfig(
        in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), head_dim=8, groups=4
    )
    with pytest.raises(GenlabError, match=message) as err:
        VideoUNet(VideoUNetConfig(unet=unet, **settings))
    assert "\n" not in str(err.value)


def test_bad_inputs_are_one_line_errors():
    net = VideoUNet(_config())
    x, t = torch.randn(2, 9, 3, 8, 8), torch.tensor([1.0, 2.0])
    with pytest.raises(GenlabError, match=r"the number of frames must be between 1 and 8 \(got 9\)"):
        net(x, t)
    with pytest.raises(GenlabError, match=r"\(N, T, C, H, W\)"):
        net(x[:, 0], t)
    with pytest.raises(GenlabError, match="`temporal` must be"):
        net(x[:, :4], t, temporal=torch.tensor([True]))
    with pytest.raises(GenlabError, match="`t` must hold"):
        net(x[:, :4], torch.rand(2, 3))


def test_joint_training_images_leave_the_temporal_weights_alone():
    torch.manual_seed(0)
    net = VideoUNet(_config())
    _perturb(net, seed=8)
    x, t = torch.randn(2, 3, 3, 8, 8), torch.tensor([20.0, 200.0])
    net(x, t, temporal=torch.tensor([False, False])).square().mean().backward()
    temporal = [p for name, p in net.named_parameters() if "_time." in name]
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in temporal)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.unet.conv_in.parameters())
    net.zero_grad()
    net(x, t, temporal=torch.tensor([True, False])).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in temporal)  # the video clip trains them


def test_temporal_conv_starts_as_identity_and_reaches_one_frame_each_way():
    from genlab.nn.video_unet import TemporalConv

    torch.manual_seed(0)
    layer = TemporalConv(4, groups=2)
    x = torch.randn(2 * 5, 4, 6, 6)  # two clips of 5 frames, folded
    assert torch.equal(layer(x, 5), x)  # zero-initialised: the identity
    _perturb(layer, seed=9)
    base = layer(x, 5)
    poked = x.clone()
    poked[2, :, 3, 3] += 1.0  # clip 0, frame 2, pixel (3, 3)
    change = (layer(poked, 5) - base).abs().amax(dim=1)  # (N * T, H, W)
    assert change[1, 2:5, 2:5].min() > 0 and change[3, 2:5, 2:5].min() > 0  # frames 1 and 3
    assert change[0].amax() == 0 and change[4].amax() == 0  # two frames away: out of the kernel's reach
    assert change[5:].amax() == 0  # the other clip
    keep = torch.tensor([True, False])
    assert torch.equal(layer(x, 5, keep)[5:], x[5:])  # a clip of images passes through


def test_temporal_conv_layers_follow_each_temporal_attention_and_go_with_temporal_off():
    torch.manual_seed(0)
    cfg = _config()
    cfg.temporal_conv = True
    net = VideoUNet(cfg).eval()
    convs = [m for m in net.modules() if type(m).__name__ == "TemporalConv"]
    attns = [m for m in net.modules() if hasattr(m, "position_bias")]
    assert len(convs) == len(attns) == 7
    _perturb(net.unet, seed=1)
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([3.0, 300.0])
    assert torch.equal(net(x, t), _per_frame(_image_unet(net), x, t))  # new layers: the image U-Net
    _perturb(net, seed=2)
    assert torch.equal(net(x, t, temporal=False), _per_frame(_image_unet(net), x, t))


def test_stacked_frames_are_one_image_of_all_frames():
    torch.manual_seed(0)
    unet = UNetConfig(
        in_channels=3, image_size=8, base_channels=8, channel_mults=(1, 2), head_dim=8, groups=4
    )
    net = VideoUNet(VideoUNetConfig(unet=unet, stack_frames=4)).eval()
    _perturb(net, seed=10)
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([3.0, 300.0])
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out.flatten(1, 2), net.stacked(x.flatten(1, 2), t))  # frame i is channels 3i..3i+2
    changed = x.clone()
    changed[:, 3] += 1.0
    assert (net(changed, t)[:, 0] - out[:, 0]).abs().amax() > 1e-3  # the last frame reaches the first
    with pytest.raises(GenlabError, match="exactly 4 frames; got 3"):
        net(x[:, :3], t)


def test_a_per_frame_full_size_level_keeps_frames_apart_until_they_are_stacked_at_half_size():
    """``frame_channels``: every frame passes the full-size level alone (shared weights, its own timestep);
    the frames meet only in the stacked U-Net, which runs at half their size."""
    torch.manual_seed(0)
    unet = UNetConfig(
        in_channels=3, image_size=8, base_channels=8, channel_mults=(1, 2), head_dim=8, groups=4,
        coordinates=True,
    )  # fmt: skip
    net = VideoUNet(VideoUNetConfig(unet=unet, stack_frames=4, frame_channels=4, first_frame_input=True))
    net.eval()
    assert net.stacked.config.image_size == 4 and net.stacked.config.in_channels == 4 * 4 + 1
    _perturb(net, seed=11)
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([[0.0, 500.0, 500.0, 500.0], [300.0] * 4])
    with torch.no_grad():
        out = net(x, t)
        assert out.shape == x.shape
        changed = x.clone()
        changed[:, 3] += 1.0
        assert (net(changed, t)[:, 0] - out[:, 0]).abs().amax() > 1e-3  # the last frame reaches the first
        # Frame 1's own timestep reaches its full-size blocks (the stacked U-Net sees the clip's, the last).
        other = t.clone()
        other[0, 1] = 400.0
        assert (net(x, other)[0] - out[0]).abs().amax() > 1e-3
        # With the stacked U-Net's output silenced, each frame's output depends on that frame alone.
        torch.nn.init.zeros_(net.stacked.conv_out.weight)
        torch.nn.init.zeros_(net.stacked.conv_out.bias)
        alone = net(x, t)
        torch.testing.assert_close(net(changed, t)[:, :3], alone[:, :3])
        one = VideoUNet(net.config).eval()
        one.load_state_dict(net.state_dict())
        torch.testing.assert_close(one(x[:1], t[:1]), alone[:1])  # clips do not see each other either
    # Without halving, the stack is of the frames themselves at full size, and the level sits around it.
    around = VideoUNet(replace(net.config, frame_downsample=False)).eval()
    assert around.stacked.config.image_size == 8 and around.stacked.config.in_channels == 4 * 3 + 1
    assert around.stacked.config.out_channels == 4 * 4
    _perturb(around, seed=12)
    with torch.no_grad():
        out = around(x, t)
        assert out.shape == x.shape
        assert (around(changed, t)[:, 0] - out[:, 0]).abs().amax() > 1e-3
    for bad, match in [
        (dict(frame_channels=4), "set `stack_frames` too"),
        (dict(stack_frames=4, frame_channels=6), "must be a multiple of 4"),
    ]:
        with pytest.raises(GenlabError, match=match):
            VideoUNetConfig(unet=unet, **bad)
    with pytest.raises(GenlabError, match="do not halve"):
        VideoUNetConfig(unet=replace(unet, image_size=6), stack_frames=4, frame_channels=4)

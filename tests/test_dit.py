"""The diffusion transformer: patchify and unpatchify are inverses, the adaLN-Zero initialisation makes the
network start at zero, and conditioning (timestep, class, text tokens) reaches the output once trained."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import GenlabError
from genlab.nn.dit import DiT, DiTConfig, patchify, positions_2d, unpatchify


@pytest.mark.parametrize(("channels", "size", "p"), [(1, 28, 4), (3, 32, 2), (3, 8, 8)])
def test_patchify_and_unpatchify_are_inverses(channels, size, p):
    x = torch.randn(2, channels, size, size)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (size // p) ** 2, channels * p * p)
    assert torch.equal(unpatchify(tokens, p, channels, size), x)
    # token k is the patch at row k // (size / p), column k % (size / p)
    g = size // p
    k = g + 1 if g > 1 else 0
    q = 1 if g > 1 else 0
    assert torch.equal(
        tokens[0, k].reshape(channels, p, p), x[0, :, q * p : (q + 1) * p, q * p : (q + 1) * p]
    )


def test_dit_starts_at_zero_and_learns_a_conditioned_output():
    torch.manual_seed(0)
    cfg = DiTConfig(
        in_channels=1, image_size=8, patch_size=2, width=32, depth=2, heads=2, num_classes=3, context_dim=16
    )
    net = DiT(cfg)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1.0, 10.0, 100.0, 500.0])
    labels, context = torch.tensor([0, 1, 2, 0]), torch.randn(4, 5, 16)
    out = net(x, t, labels, context)
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # adaLN-Zero: the final layer is zero
    target = torch.randn(4, 1, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss = ((net(x, t, labels, context) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2  # it can fit: gradients reach through the zero-initialised gates
    other = net(x, t, torch.tensor([1, 2, 0, 1]), context)
    assert not torch.allclose(other, net(x, t, labels, context))  # the class changes the output
    assert positions_2d(4, 32).shape == (16, 32)
    with pytest.raises(GenlabError, match="cross-attends"):
        net(x, t, labels)


def test_dit_config_errors():
    with pytest.raises(GenlabError, match="multiple of the patch size"):
        DiTConfig(image_size=28, patch_size=3)
    with pytest.raises(GenlabError, match="multiple of the heads"):
        DiTConfig(width=30, heads=4)

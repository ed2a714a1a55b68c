"""equican's update network at the input's resolution (the reference implementation's is equican.canon.paper)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equican import make_group
from equican.canon.nets import EnergyNet, ResidualBlock, UpdateNet
from equican.errors import ConfigError


def test_mnist_widths_shapes():
    # The widths and pooling of the paper's MNIST models: two residual blocks 3→32→64, each followed by 2×2 max
    # pooling: 70×70 → 35×35 → 17×17, at the input's own
    # resolution (no resize to 224); the head pools onto monotone's chart grid (2, R+1, R).
    group = make_group("monotone", cells=4)
    net = UpdateNet(3, group.unconstrained_shape, channels=(32, 64))
    x = torch.rand(2, 3, 70, 70, generator=torch.Generator().manual_seed(0))
    blocks = list(net.blocks)
    assert [(b.conv1.in_channels, b.conv2.out_channels, b.pool) for b in blocks] == [(3, 32, 2), (32, 64, 2)]
    assert net.features(x).shape == (2, 64, 17, 17)
    out = net(x)
    assert out.shape == (2, *group.unconstrained_shape) and out.is_contiguous()
    assert float(out.detach().abs().max()) == 0  # the zero head: an untrained network predicts the identity
    assert UpdateNet(1, (1,))(x[:, :1]).shape == (2, 1)  # any other chart: global pooling and a linear head


def test_residual_block_matches_its_definition():
    # act(IN(conv2(act(IN(conv1 x)))) + skip(x)), then max pooling, written out with torch's instance norm
    # (the block computes it as a per-channel group norm, channels-last, for speed).
    torch.manual_seed(0)
    block = ResidualBlock(3, 8, pool=2).double()
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    y = F.relu(F.instance_norm(block.conv1(x)))
    y = F.relu(F.instance_norm(block.conv2(y)) + block.skip(x))
    assert torch.allclose(block(x.contiguous(memory_format=torch.channels_last)), F.max_pool2d(y, 2), atol=1e-12)
    smooth = ResidualBlock(3, 8, pool=1, activation="softplus").double()
    y = F.softplus(F.instance_norm(smooth.conv1(x)))
    y = F.softplus(F.instance_norm(smooth.conv2(y)) + smooth.skip(x))
    assert torch.allclose(smooth(x), y, atol=1e-12)


def test_head_pools_before_its_convolution_without_changing_the_function():
    torch.manual_seed(0)
    net = UpdateNet(1, (2, 3, 2), channels=(4,)).double()
    nn.init.normal_(net.head.weight)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(net.head(net.features(x)), (3, 2))
    assert torch.allclose(net(x), expected, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_second_derivatives_exist(activation):
    # The unrolled optimization canonicalizer differentiates the energy's input gradient again.
    torch.manual_seed(0)
    energy = EnergyNet(1, channels=(2, 3), activation=activation).double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda y: energy(y).sum(), (x,))


def test_invalid_settings_raise():
    with pytest.raises(ConfigError, match="activation"):
        UpdateNet(1, (1,), activation="gelu")
    with pytest.raises(ConfigError, match="activation"):
        ResidualBlock(1, 2, activation="tanh")
    with pytest.raises(ConfigError, match="channels"):
        UpdateNet(1, (1,), channels=())
    with pytest.raises(ConfigError, match="out_shape"):
        UpdateNet(1, (0,))

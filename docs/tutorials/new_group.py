"""Tutorial 1: define a new group, have the library check its laws, and canonicalize with it.

Defines ``Translation2d`` (2-D translations) by subclassing ``equican.Group``, registers it, runs the library's law
checks on it and on two deliberately broken variants, then uses it with the DEQ canonicalizer on MNIST digits.
Every claim of the tutorial page (docs/tutorials/new_group.md) is asserted here.

Run:  python docs/tutorials/new_group.py   (under 10 s on one CPU thread, offline)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from equican import Group, Tolerance, list_groups, make_group
from equican.canon import DEQCanonicalizer, IdentityCanonicalizer, UpdateNet
from equican.data import load_mnist
from equican.errors import ConfigError
from equican.sampling import affine_sample
from equican.testing import LAWS, GroupContract, assert_g_equivariant, canonicalizer_invariance_error, check_group_laws


# ---------------------------------------------------------------------------------------------- 1. the group
class Translation2d(Group, name="translation"):  # name= registers the class: make_group("translation")
    """Translations ``u ↦ u + t`` of the image plane.

    Convention:
        An element is a shift ``t = (t_x, t_y)`` in normalized coordinates (2 / (W - 1) is one pixel), shape
        ``(B, 2)``; every real pair is valid. ``act(t, x)(u) = x(u - t)``: positive ``t_x`` moves the content right,
        positive ``t_y`` moves it down. Composition adds shifts. Samples leaving the image read 0.

    Args:
        max_shift: :meth:`sample` draws each coordinate uniformly from ``[-max_shift, max_shift)``.
    """

    def __init__(self, max_shift: float = 0.2) -> None:
        if not (isinstance(max_shift, (int, float)) and 0 <= max_shift <= 1):
            raise ConfigError(f"Translation2d: expected max_shift in [0, 1], got {max_shift!r}")
        self.max_shift = float(max_shift)  # stored under the argument's name: repr and == read it back

    @property
    def param_shape(self) -> tuple[int, ...]:
        return (2,)

    def identity(self, batch, *, device=None, dtype=None):
        return torch.zeros(batch, 2, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        # Randomness only from `generator` (the base class passes a freshly seeded one for generator=None), drawn
        # on the generator's own device and then moved: the same seed gives the same shifts on every device.
        u = torch.rand(batch, 2, generator=generator, device=generator.device, dtype=dtype)
        return (self.max_shift * (2 * u - 1)).to(device)

    def compose(self, g, h):
        return g + h

    def inverse(self, g):
        return -g

    def act(self, g, x):
        # affine_sample(x, M) reads x at M @ (u, 1): here at u - t, which is act(t, x)(u) = x(t⁻¹·u).
        one, zero = torch.ones_like(g[:, 0]), torch.zeros_like(g[:, 0])
        matrix = torch.stack([torch.stack([one, zero, -g[:, 0]], -1), torch.stack([zero, one, -g[:, 1]], -1)], 1)
        return affine_sample(x, matrix)

    def tolerance(self, dtype):
        # Measured with equican.testing.measure_law_errors(seeds=2000) at the default max_shift, both dtypes.
        # element: largest error 0.56 eps (associativity); bound 2 eps. action: bilinear resampling of fractional
        # shifts is not exact; largest error 0.0328 (inverse action, float64); bound 0.05, about 1.5x.
        return Tolerance(element=2 * torch.finfo(dtype).eps, action=0.05)


# ---------------------------------------------------------------------------------------------- 2. its laws
group = make_group("translation")
assert "translation" in list_groups() and group == Translation2d(max_shift=0.2)
for dtype in (torch.float32, torch.float64):
    report = check_group_laws(group, dtype=dtype, gradcheck=True)
    report.raise_if_failed()  # AssertionError with the table below if any law fails
print(report, end="\n\n")


class DefaultTolerance(Translation2d):
    tolerance = Group.tolerance  # the base class's bound: rounding error only, right for exact groups alone


strict = check_group_laws(DefaultTolerance())
assert {r.law for r in strict.failures} == {"homomorphism", "inverse_action", "act_inverse"}
print("with the default tolerance:", *strict.failures, sep="\n  ", end="\n\n")


class TestTranslation2d(GroupContract):  # what a user puts in their own tests/ (pytest collects it as is)
    group = Translation2d()
    hypothesis_settings = {"max_examples": 3, "database": None}  # the script runs it directly, briefly


suite = TestTranslation2d()
for law in LAWS:
    getattr(suite, f"test_{law}")()  # one hypothesis-driven test per law
print(f"GroupContract: {len(LAWS)} law tests passed for {suite.group!r}")


# ---------------------------------------------------------------------------------------------- 3. negative controls
class WrongInverse(Translation2d):
    def inverse(self, g):
        return g.clone()  # forgot the minus sign


broken = check_group_laws(WrongInverse())
assert {"inverse_left", "inverse_right", "inverse_action", "act_inverse"} <= {r.law for r in broken.failures}
print("WrongInverse rejected:", *broken.failures, sep="\n  ")


class MirroredConvention(Translation2d):
    def act(self, g, x):
        return super().act(-g, x)  # x(g·u) instead of x(g⁻¹·u): content moves the wrong way


# Translations commute, so t ↦ act(-t) is an action too: no law can see this bug. A known case can.
assert check_group_laws(MirroredConvention()).passed
images, _ = load_mnist("test", limit=16)
# Ink in [0, 1]; MNIST's ink comes within a pixel of the border, so pad to 36×36 to keep shifted ink inside.
x = F.pad(images[:, None].float() / 255, (4, 4, 4, 4))  # (16, 1, 36, 36)
one_pixel = torch.tensor([[2 / (x.shape[-1] - 1), 0.0]]).expand(len(x), 2)  # t_x of one pixel, in normalized units
shifted = F.pad(x[..., :-1], (1, 0))  # the digits moved one pixel to the right, by hand
assert torch.allclose(group.act(one_pixel, x), shifted, atol=1e-5)
assert not torch.allclose(MirroredConvention().act(one_pixel, x), shifted, atol=1e-5)
print("MirroredConvention passes every law but fails the one-pixel check\n")


# ---------------------------------------------------------------------------------------------- 4. canonicalize
deq = DEQCanonicalizer(group, UpdateNet.for_group(group, 1, channels=(8, 16))).eval()
res = deq(x)
assert res.x.shape == (16, 1, 36, 36) and res.g.shape == (16, 2)
# UpdateNet's head starts at zero, so untrained the fixed point is z = 0: g is the identity, nothing moves.
assert torch.equal(res.g, group.identity(16)) and bool(res.info["converged"].all())
print(f"untrained DEQ: x {tuple(res.x.shape)}, g {tuple(res.g.shape)}, |g| max {res.g.abs().max():.1e}")


class CentroidUpdate(nn.Module):
    """Δ(y) = -(centre of mass of y): the correction that moves the ink's centre to the middle of the image."""

    def forward(self, y):
        u = torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)  # square images: the same grid for x and y
        mass = y.sum(dim=(1, 2, 3))
        centre = torch.stack([(y.sum(dim=(1, 2)) * u).sum(-1), (y.sum(dim=(1, 3)) * u).sum(-1)], 1) / mass[:, None]
        return -centre


# The DEQ solves z = z + Δ(act(z, x)). Bilinear shifts move the centre of mass exactly (while the ink stays inside),
# so the fixed point is z* = -centre(x) and g = centre(x): predicting g is equivariant by construction.
centring = DEQCanonicalizer(group, CentroidUpdate()).eval()
res = centring(x)
assert bool(res.info["converged"].all()) and CentroidUpdate()(res.x).abs().max() < 1e-5
assert_g_equivariant(centring, x, atol=1e-5)  # canon(act(k, x)).g == compose(k, canon(x).g), k random
errors = {name: canonicalizer_invariance_error(c, x).mean().item()
          for name, c in (("identity", IdentityCanonicalizer(group)), ("centring DEQ", centring))}
assert errors["centring DEQ"] < errors["identity"]
# What is left is bilinear resampling of sharp strokes: with whole-pixel shifts k it vanishes.
k = torch.randint(-3, 4, (16, 2), generator=torch.Generator().manual_seed(1)) * (2 / (x.shape[-1] - 1))
whole_pixel = (centring(group.act(k, x)).x - res.x).abs().max().item()
assert whole_pixel < 1e-4
print(f"centring DEQ: {int(res.info['steps'].max())} solver steps, residual {res.info['residual_best'].max():.1e}")
print("mean max|canon(act(k, x)).x - canon(x).x|:", ", ".join(f"{n} {v:.3f}" for n, v in errors.items()),
      f"(whole-pixel k: {whole_pixel:.1e})")

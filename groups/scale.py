"""Global isotropic scaling about the image centre: the "global scaling" that local scaling generalizes."""

from __future__ import annotations

import torch

from equican import Group, Tolerance
from equican.errors import ConfigError
from equican.sampling import affine_sample


class Scale2d(Group, name="scale"):
    """The multiplicative group of positive scalings ``u ↦ e^s u`` about the image centre.

    Convention:
        An element is a log-scale ``s``, shape ``(B, 1)``; every real value is valid. ``s > 0`` magnifies (the
        content grows about the centre, its outer part leaves the image), ``s < 0`` shrinks it (zero padding fills
        the border). Composition adds log-scales.

    Args:
        max_log_scale: :meth:`sample` draws ``s`` uniformly from ``[-max_log_scale, max_log_scale)``.
    """

    def __init__(self, max_log_scale: float = 0.3) -> None:
        if not (isinstance(max_log_scale, (int, float)) and 0 <= max_log_scale < 5):
            raise ConfigError(f"Scale2d: expected max_log_scale in [0, 5), got {max_log_scale!r}")
        self.max_log_scale = float(max_log_scale)

    @property
    def param_shape(self) -> tuple[int, ...]:
        return (1,)

    def identity(self, batch, *, device=None, dtype=None):
        return torch.zeros(batch, 1, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        return self._uniform((batch, 1), -self.max_log_scale, self.max_log_scale, generator=generator,
                             device=device, dtype=dtype)

    def compose(self, g, h):
        return g + h

    def inverse(self, g):
        return -g

    def distance(self, g, h):
        return (g - h).abs()[:, 0]

    def tolerance(self, dtype):
        # action: two bilinear resamplings of band-limited test images (see Rotation2d.tolerance for the protocol).
        return Tolerance(element=16 * torch.finfo(dtype).eps, action=0.03)

    def act(self, g, x):
        inv = torch.exp(-g[:, 0])
        zero = torch.zeros_like(inv)
        matrix = torch.stack([torch.stack([inv, zero, zero], -1), torch.stack([zero, inv, zero], -1)], 1)
        return affine_sample(x, matrix)

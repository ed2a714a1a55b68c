"""The optimization canonicalizer: gradient descent (or Adam) on an energy of the canonical input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import validation as V
from ..errors import ConfigError, ShapeError
from ..group import Group
from ..sampling import twice_differentiable
from .base import Canonicalizer

__all__ = ["OptimizationConfig", "OptimizationCanonicalizer"]


@dataclass(frozen=True)
class OptimizationConfig:
    """Settings of [`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer]; validated when made.

    Attributes:
        steps: gradient steps in training mode, from the identity ``z = 0``.
        eval_steps: gradient steps in evaluation mode (None: ``steps``).
        lr: step size.
        optimizer: ``"sgd"`` (``z ← z - lr ∇E``) or ``"adam"`` (per-coordinate Adam with bias correction).
        betas: Adam's decay rates of the first and second moments.
        eps: Adam's denominator offset (``m̂ / sqrt(v̂ + eps²)``).
        unroll: in training mode, the last ``unroll`` steps are differentiated through (second derivatives of the
            energy; their actions use [`equican.sampling.twice_differentiable`][equican.sampling.twice_differentiable]),
            so the energy's parameters receive gradients; earlier steps are run on detached parameters. 0: no unrolling
            (the result is then a constant for the energy's parameters).
    """

    steps: int = 10
    eval_steps: int | None = None
    lr: float = 0.1
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    unroll: int = 1

    def __post_init__(self) -> None:
        def bad(message: str) -> ConfigError:
            return ConfigError(f"OptimizationConfig: {message}")

        where = "OptimizationConfig"
        V.require_int(self.steps, low=1, where=where, name="steps")
        if self.eval_steps is not None:
            V.require_int(self.eval_steps, low=1, where=where, name="eval_steps (or None)")
        V.require_positive(self.lr, where=where, name="lr")
        if self.optimizer not in ("sgd", "adam"):
            raise bad(f"expected optimizer 'sgd' or 'adam', got {self.optimizer!r}")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2
                and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise bad(f"expected betas to be a pair of numbers in [0, 1), got {self.betas!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise bad(f"expected eps > 0, got {self.eps!r}")
        if V.require_int(self.unroll, low=0, where=where, name="unroll") > self.steps:
            raise bad(f"expected unroll to be an int in [0, steps={self.steps}], got {self.unroll!r}")


class OptimizationCanonicalizer(Canonicalizer):
    """``z = argmin E(act(h(z), x))`` approximated by gradient steps from the identity ``z = 0``.

    The energy is a learned network (e.g. [`EnergyNet`][equican.canon.nets.EnergyNet],
    [`FixedPointEnergy`][equican.canon.nets.FixedPointEnergy]) or any callable, for example the entropy of a
    classifier's prediction. Each step costs a forward and a backward pass of the energy. Runs under ``torch.no_grad()``
    too (the energy gradient is taken inside ``torch.enable_grad()``), but not under ``torch.inference_mode()``.

    ``info`` keys: ``energy``: ``(B, steps)`` the energy before each step.

    Args:
        group: the group.
        energy: maps canonical inputs ``(B, C, H, W)`` to energies ``(B,)``; an ``nn.Module`` is registered (its
            parameters are trained through the unrolled steps and follow ``.to()``).
        config: step count, step size, optimizer and unrolling.
    """

    def __init__(self, group: Group, energy: Callable[[torch.Tensor], torch.Tensor],
                 config: OptimizationConfig | None = None) -> None:
        super().__init__(group)
        if not callable(energy):
            raise ConfigError(f"OptimizationCanonicalizer: expected energy to be callable, got {type(energy).__name__}")
        config = OptimizationConfig() if config is None else config
        if not isinstance(config, OptimizationConfig):
            raise ConfigError(f"OptimizationCanonicalizer: expected config to be an OptimizationConfig, "
                              f"got {type(config).__name__}")
        self.energy = energy  # nn.Module assignment registers it as a submodule
        self.config = config

    def _energy(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.canonical_input(z, self.group.from_unconstrained(z), x)
        e = self.energy(y)
        if not isinstance(e, torch.Tensor) or tuple(e.shape) != (x.shape[0],):
            got = V.fmt_shape(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ShapeError(f"OptimizationCanonicalizer: expected the energy to return shape ({x.shape[0]},), "
                             f"got {got}")
        return e

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Descend the energy from ``z = 0`` for ``x: (B, C, H, W)``: the steps of the current mode.

        Returns:
            ``(z, info)``: chart parameters ``(B, *unconstrained_shape)`` (differentiable through the last
            ``unroll`` steps in training mode, detached otherwise) and ``info["energy"]``, ``(B, steps)``.

        Raises:
            ShapeError: the energy does not return shape ``(B,)``.
        """
        if torch.is_inference_mode_enabled():
            raise ConfigError("OptimizationCanonicalizer.forward: expected to run outside torch.inference_mode() "
                              "(its steps take gradients; torch.no_grad() works), got inference mode")
        c = self.config
        steps = c.steps if self.training or c.eval_steps is None else c.eval_steps
        unroll = c.unroll if self.training else 0
        z = self.zeros(x)
        m = v = torch.zeros_like(z)
        energies = []
        for k in range(steps):
            unrolled = k >= steps - unroll
            if not unrolled:
                # Earlier steps are not differentiated: cut the graph so memory stays flat in the step count.
                z, m, v = z.detach(), m.detach(), v.detach()
            # grid_sample has no double backward in the grid, so unrolled steps sample with the pure-torch sampler.
            sampler = twice_differentiable() if unrolled else contextlib.nullcontext()
            with torch.enable_grad(), sampler:
                if not z.requires_grad:
                    z = z.requires_grad_()
                e = self._energy(z, x)
                (grad,) = torch.autograd.grad(e.sum(), z, create_graph=unrolled, allow_unused=True) \
                    if e.requires_grad else (None,)
            if grad is None:
                raise ConfigError("OptimizationCanonicalizer: expected an energy that depends on the canonical "
                                  "input, got one whose value has no gradient with respect to it")
            energies.append(e.detach())
            if c.optimizer == "sgd":
                z = z - c.lr * grad
            else:
                b1, b2 = c.betas
                m = b1 * m + (1 - b1) * grad
                v = b2 * v + (1 - b2) * grad * grad
                m_hat, v_hat = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
                # ε² inside the root (rather than ε outside) keeps the unrolled second derivatives finite where a
                # gradient coordinate is exactly 0.
                z = z - c.lr * m_hat / (v_hat + c.eps**2).sqrt()
        if unroll == 0:
            z = z.detach()
        return z, {"energy": torch.stack(energies, dim=1)}

    def extra_repr(self) -> str:
        return f"group={self.group!r}, config={self.config!r}"

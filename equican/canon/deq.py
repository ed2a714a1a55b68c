"""The deep equilibrium canonicalizer (DEC): the element is the fixed point of a learned update, solved by torchdeq.

This is the only module that imports torchdeq.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchdeq import get_deq

from .. import _validate as V
from ..errors import ConfigError, ConvergenceWarning
from ..group import Group
from .direct import UpdateCanonicalizer

__all__ = ["SolverSettings", "DEQConfig", "DEQCanonicalizer"]

_SOLVERS = ("anderson", "broyden", "fixed_point_iter")
_GRADIENTS = ("implicit", "phantom")
_POLICIES = ("best", "identity")


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


@dataclass(frozen=True)
class SolverSettings:
    """One forward-solver setting of the DEQ (one for training, one for evaluation).

    Attributes:
        solver: torchdeq forward solver: ``"anderson"``, ``"broyden"`` or ``"fixed_point_iter"``.
        max_iter: cap on evaluations of the update map. Anderson and Broyden spend two on their start, so they
            need at least 3.
        tol: the solve stops once every input's residual ``‖f(z) - z‖`` (``stop_mode="abs"``) or
            ``‖f(z) - z‖ / ‖f(z)‖`` (``"rel"``) is below ``tol``; an input whose best residual is not is reported
            as not converged.
        stop_mode: ``"abs"`` or ``"rel"``.
    """

    solver: str = "anderson"
    max_iter: int = 5
    tol: float = 1e-3
    stop_mode: str = "abs"

    def __post_init__(self) -> None:
        where = "SolverSettings"
        _require(self.solver in _SOLVERS, where, f"expected solver in {_SOLVERS}, got {self.solver!r}")
        V.require_int(self.max_iter, low=1, where=where, name="max_iter")
        _require(self.solver == "fixed_point_iter" or self.max_iter >= 3, where,
                 f"expected max_iter >= 3 for {self.solver} (two evaluations start it), got {self.max_iter}")
        V.require_positive(self.tol, where=where, name="tol")
        _require(self.stop_mode in ("abs", "rel"), where, f"expected stop_mode 'abs' or 'rel', got {self.stop_mode!r}")


@dataclass(frozen=True)
class DEQConfig:
    """Settings of [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer]; validated when made.

    Attributes:
        train: forward solver in training mode (the paper's MNIST setting: 5 Anderson iterations).
        eval: forward solver in evaluation mode (``.eval()`` really switches to it).
        gradient: ``"implicit"`` (implicit differentiation at the fixed point, solving the adjoint equation with
            the backward solver) or ``"phantom"`` (differentiate ``phantom_steps`` damped applications of the update
            from the detached fixed point; 1 step is Jacobian-free backpropagation).
        phantom_steps: steps of the phantom gradient.
        phantom_tau: damping ``τ`` of each phantom step ``z ← τ f(z) + (1-τ) z``, in ``(0, 1]``.
        backward_solver: torchdeq solver of the implicit gradient's adjoint equation.
        backward_max_iter: iteration cap of the adjoint solve.
        backward_tol: residual tolerance of the adjoint solve.
        on_nonconvergence: what an input that did not converge gets: ``"best"`` (the iterate with the lowest residual,
            torchdeq's choice) or ``"identity"`` (``g = e``). Either way one
            [`ConvergenceWarning`][equican.errors.ConvergenceWarning] is issued per call, ``info["converged"]`` is False
            for it, and a non-finite iterate always falls back to the identity: the result is never NaN.
    """

    train: SolverSettings = field(default_factory=SolverSettings)
    eval: SolverSettings = field(default_factory=lambda: SolverSettings(max_iter=10, tol=1e-4))
    gradient: str = "phantom"
    phantom_steps: int = 1
    phantom_tau: float = 1.0
    backward_solver: str = "fixed_point_iter"
    backward_max_iter: int = 40
    backward_tol: float = 1e-6
    on_nonconvergence: str = "best"

    def __post_init__(self) -> None:
        where = "DEQConfig"
        for key in ("train", "eval"):
            value = getattr(self, key)
            _require(isinstance(value, SolverSettings), where,
                     f"expected {key} to be a SolverSettings, got {type(value).__name__}")
        _require(self.gradient in _GRADIENTS, where, f"expected gradient in {_GRADIENTS}, got {self.gradient!r}")
        V.require_int(self.phantom_steps, low=1, where=where, name="phantom_steps")
        V.require_positive(self.phantom_tau, where=where, name="phantom_tau")
        _require(self.phantom_tau <= 1, where, f"expected phantom_tau in (0, 1], got {self.phantom_tau!r}")
        _require(self.backward_solver in _SOLVERS, where,
                 f"expected backward_solver in {_SOLVERS}, got {self.backward_solver!r}")
        V.require_int(self.backward_max_iter, low=1, where=where, name="backward_max_iter")
        V.require_positive(self.backward_tol, where=where, name="backward_tol")
        _require(self.on_nonconvergence in _POLICIES, where,
                 f"expected on_nonconvergence in {_POLICIES}, got {self.on_nonconvergence!r}")


class DEQCanonicalizer(UpdateCanonicalizer):
    """The deep equilibrium canonicalizer: ``z* = f_θ(z*; x)`` solved from the identity ``z = 0``.

    ``f_θ`` is the update map of [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]
    (``P(z) + Δ_θ(act(h(z), x))``). The solve runs without gradient; gradients come from ``config.gradient``
    (training mode only: in evaluation mode ``z*`` is a constant and gradients reach only ``x``, through the final
    action).

    ``info`` keys (tensors on ``x``'s device):

    * ``residual``: ``(B, N)`` residual after each solver step (torchdeq's trace; after an early stop the remaining
      entries repeat the lowest residual).
    * ``residual_best``: ``(B,)`` lowest residual.
    * ``steps``: ``(B,)`` the step of the returned iterate.
    * ``converged``: ``(B,)`` bool, lowest residual below ``tol`` and finite.
    * ``fallback``: ``(B,)`` bool, replaced by the identity (see ``DEQConfig.on_nonconvergence``).

    Args:
        group: the group.
        net: the update network ``Δ_θ`` (e.g. [`UpdateNet`][equican.canon.nets.UpdateNet]).
        config: solver and gradient settings.
        reduce: an optional channel reduction applied once before the solve (see
            [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]).
    """

    def __init__(self, group: Group, net: nn.Module, config: DEQConfig | None = None,
                 reduce: nn.Module | None = None) -> None:
        super().__init__(group, net, reduce)
        config = DEQConfig() if config is None else config
        if not isinstance(config, DEQConfig):
            raise ConfigError(f"DEQCanonicalizer: expected config to be a DEQConfig, got {type(config).__name__}")
        self.config = config
        # Two torchdeq cores, registered as submodules so that .train()/.eval() reach them; each one's solver
        # settings are fixed at construction, which is how torchdeq is configured.
        self.train_core = self._core(config.train)
        self.eval_core = self._core(config.eval)

    def _core(self, settings: SolverSettings) -> nn.Module:
        c = self.config
        grad: dict[str, Any]
        if c.gradient == "implicit":
            grad = dict(ift=True, b_solver=c.backward_solver, b_max_iter=c.backward_max_iter, b_tol=c.backward_tol)
        else:
            grad = dict(ift=False, grad=c.phantom_steps, tau=c.phantom_tau)
        return get_deq(core="indexing", f_solver=settings.solver, f_max_iter=settings.max_iter, f_tol=settings.tol,
                       f_stop_mode=settings.stop_mode, eval_f_max_iter=settings.max_iter, **grad)

    @property
    def settings(self) -> SolverSettings:
        """The solver settings of the current mode (``config.train`` or ``config.eval``)."""
        return self.config.train if self.training else self.config.eval

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Solve ``z* = f_θ(z*; x)`` from ``z = 0`` for ``x: (B, C, H, W)`` with the current mode's settings.

        Returns:
            ``(z, info)``: the fixed points ``(B, *unconstrained_shape)`` (the identity's zeros for inputs that fall
            back) and the solver statistics listed in the class docstring.

        Warns:
            ConvergenceWarning: some input did not reach the residual tolerance (once per call).
        """
        settings = self.settings
        core = self.train_core if self.training else self.eval_core
        features = self.update_input(x)
        z_out, stats = core(lambda z: self.step(z, features), self.zeros(x))
        z = z_out[-1]
        lowest = stats[f"{settings.stop_mode}_lowest"].to(x.device)
        finite = torch.isfinite(z).flatten(1).all(dim=1) & torch.isfinite(lowest)
        converged = finite & (lowest < settings.tol)
        fallback = ~finite if self.config.on_nonconvergence == "best" else ~converged
        if not bool(converged.all()):
            # The message names only the settings, not this batch's counts and residuals: Python shows a warning
            # once per distinct message and place, so a training loop gets one line, not one per step. The numbers
            # are in info ("converged", "residual_best").
            warnings.warn(ConvergenceWarning(
                f"DEQCanonicalizer: some inputs did not reach the {settings.stop_mode} residual tolerance "
                f"{settings.tol:g} within {settings.max_iter} iterations; they get the "
                f"{self.config.on_nonconvergence} policy (per input: result.info['converged'], "
                f"info['residual_best'])"), stacklevel=3)
        if bool(fallback.any()):
            keep = fallback.logical_not().view(-1, *([1] * (z.ndim - 1)))
            z = torch.where(keep, z, torch.zeros_like(z))
        # torchdeq's trace opens with a placeholder (1e8) before the first step: drop it.
        trace = stats[f"{settings.stop_mode}_trace"][:, 1:].to(x.device)
        info = {"residual": trace, "residual_best": lowest,
                "steps": stats["nstep"].to(x.device).long(), "converged": converged, "fallback": fallback}
        return z, info

    def extra_repr(self) -> str:
        return f"group={self.group!r}, config={self.config!r}"

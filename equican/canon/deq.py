"""The deep equilibrium canonicalizer (DEC): the element is the fixed point of a learned update, solved by torchdeq.

This is the only module that imports torchdeq.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torchdeq import get_deq

from .. import validation as V
from ..errors import ConfigError, ConvergenceWarning
from ..group import Group
from .base import _rows
from .direct import UpdateCanonicalizer

__all__ = ["SolverSettings", "DEQConfig", "DEQCanonicalizer", "MAX_ITER"]

MAX_ITER = 10_000
"""The largest iteration cap of any solve (``SolverSettings.max_iter``, ``DEQConfig.backward_max_iter`` and
``phantom_steps``, the ``dec`` kind's ``train_iter`` and ``eval_iter``). A larger cap is a ConfigError, whether typed,
given on the command line or read from a saved model's config. The DECs of this project use 5 to 40 iterations; a
solve that needs thousands is not converging, and 10**18 would never return."""


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
        max_iter: cap on evaluations of the update map, at most [`MAX_ITER`][equican.canon.deq.MAX_ITER]. Anderson and
            Broyden spend two on their start, so they need at least 3. The solve stops as soon as every input's
            residual is below ``tol`` (torchdeq then pads its residual trace to ``max_iter`` entries, a cost that
            the bound keeps to milliseconds).
        tol: the solve stops once every input's residual ``‖f(z) - z‖`` (``stop_mode="abs"``) or
            ``‖f(z) - z‖ / ‖f(z)‖`` (``"rel"``) is below ``tol``; an input whose best residual is not is reported
            as not converged.
        stop_mode: ``"abs"`` or ``"rel"``. The reported residual (``info["residual_true"]``) of ``"rel"`` is
            ``‖f(z) − z‖ / (1 + ‖f(z)‖)``, measured once more on the returned iterate.
        damping: Anderson's mixing ``τ`` in ``(0, 1]`` (1: undamped); a damped step ``τ·f + (1 − τ)·z`` helps an
            update map that overshoots. Only the Anderson solver takes it.
    """

    solver: str = "anderson"
    max_iter: int = 5
    tol: float = 1e-3
    stop_mode: str = "abs"
    damping: float = 1.0

    def __post_init__(self) -> None:
        where = "SolverSettings"
        _require(self.solver in _SOLVERS, where, f"expected solver in {_SOLVERS}, got {self.solver!r}")
        V.require_int(self.max_iter, low=1, high=MAX_ITER, where=where, name="max_iter")
        _require(self.solver == "fixed_point_iter" or self.max_iter >= 3, where,
                 f"expected max_iter >= 3 for {self.solver} (two evaluations start it), got {self.max_iter}")
        V.require_positive(self.tol, where=where, name="tol")
        _require(self.stop_mode in ("abs", "rel"), where, f"expected stop_mode 'abs' or 'rel', got {self.stop_mode!r}")
        V.require_positive(self.damping, where=where, name="damping")
        _require(self.damping <= 1, where, f"expected damping in (0, 1], got {self.damping!r}")
        _require(self.damping == 1 or self.solver == "anderson", where,
                 f"expected damping 1 for solver {self.solver!r} (only Anderson is damped), got {self.damping!r}")


@dataclass(frozen=True)
class DEQConfig:
    """Settings of [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer]; validated when made.

    Attributes:
        train: forward solver in training mode (the paper's MNIST setting: 5 Anderson iterations).
        eval: forward solver in evaluation mode (``.eval()`` really switches to it).
        gradient: ``"implicit"`` (implicit differentiation at the fixed point, solving the adjoint equation with
            the backward solver) or ``"phantom"`` (differentiate ``phantom_steps`` damped applications of the update
            from the detached fixed point; 1 step is Jacobian-free backpropagation). Over a discrete group the two
            coincide for one undamped step (``∂f/∂z = 0``, see ``jacobian_weight``), and ``"implicit"`` is computed
            that way.
        phantom_steps: steps of the phantom gradient (at most [`MAX_ITER`][equican.canon.deq.MAX_ITER]).
        phantom_tau: damping ``τ`` of each phantom step ``z ← τ f(z) + (1-τ) z``, in ``(0, 1]``.
        backward_solver: torchdeq solver of the implicit gradient's adjoint equation.
        backward_max_iter: iteration cap of the adjoint solve (at most [`MAX_ITER`][equican.canon.deq.MAX_ITER]).
        backward_tol: residual tolerance of the adjoint solve.
        jacobian_weight: weight of torchdeq's Jacobian regularization (``‖∂f/∂z‖_F²`` at the fixed point, estimated
            with one random vector), returned by [`regularizer`][equican.canon.base.Canonicalizer.regularizer] in training
            mode; 0 turns it off and skips its cost (one more update evaluation and its double backward). Over a
            discrete group (``group.discrete``: cyclic, dihedral) the penalty is exactly 0 and is not computed: the
            update sees ``z`` only through the element it selects (an argmax), so ``∂f/∂z = 0`` almost everywhere
            and nothing in the map depends on ``z`` differentiably.
        residual_weight: weight of the squared residual ``‖f(z) − z‖²`` of the returned iterate, with gradient through
            the update map: it trains the map to make the solver's answer a true fixed point (the network then
            predicts no further correction on the canonical input). Costs nothing extra: the evaluation that
            measures the residual is the one differentiated.
        bound: a soft bound on the iterate, or None (the default): each application of the update map ends in
            ``b·tanh(f(z)/b)``, so every chart coordinate stays in ``(−b, b)`` and the map, continuous on a box it
            maps into itself, has a fixed point there. Without it, a learned update over an unbounded chart can run
            away: measured, every affine DEC solve (log-scales, shear and translations in the chart) was non-finite
            within 15 training steps, and each fell back to the identity; with ``bound=3`` all converged. Choose ``b``
            above the chart values the data needs (a periodic coordinate such as an angle is then limited to
            ``(−b, b)`` too).
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
    jacobian_weight: float = 0.0
    residual_weight: float = 0.0
    bound: float | None = None
    on_nonconvergence: str = "best"

    def __post_init__(self) -> None:
        where = "DEQConfig"
        for key in ("train", "eval"):
            value = getattr(self, key)
            _require(isinstance(value, SolverSettings), where,
                     f"expected {key} to be a SolverSettings, got {type(value).__name__}")
        _require(self.gradient in _GRADIENTS, where, f"expected gradient in {_GRADIENTS}, got {self.gradient!r}")
        V.require_int(self.phantom_steps, low=1, high=MAX_ITER, where=where, name="phantom_steps")
        V.require_positive(self.phantom_tau, where=where, name="phantom_tau")
        _require(self.phantom_tau <= 1, where, f"expected phantom_tau in (0, 1], got {self.phantom_tau!r}")
        _require(self.backward_solver in _SOLVERS, where,
                 f"expected backward_solver in {_SOLVERS}, got {self.backward_solver!r}")
        V.require_int(self.backward_max_iter, low=1, high=MAX_ITER, where=where, name="backward_max_iter")
        V.require_positive(self.backward_tol, where=where, name="backward_tol")
        for key in ("jacobian_weight", "residual_weight"):
            value = getattr(self, key)
            _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf"),
                     where, f"expected {key} to be a finite number >= 0, got {value!r}")
        if self.bound is not None:
            V.require_positive(self.bound, where=where, name="bound")
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
        resolution: the working resolution of the update map (see
            [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]); None: the input's own.
    """

    def __init__(self, group: Group, net: nn.Module, config: DEQConfig | None = None,
                 reduce: nn.Module | None = None, resolution: int | None = None) -> None:
        super().__init__(group, net, reduce, resolution)
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
        if c.gradient == "implicit" and not self.group.discrete:
            grad = dict(ift=True, b_solver=c.backward_solver, b_max_iter=c.backward_max_iter,
                        b_tol=c.backward_tol)
        elif c.gradient == "implicit":
            # Over a discrete group the update sees z only through an argmax, so ∂f/∂z = 0 and the adjoint equation
            # g = (∂f/∂z)ᵀ g + ∂L/∂z* is solved by its right-hand side: the implicit gradient is exactly the one-step
            # phantom gradient. torchdeq's adjoint solve differentiates f in z, and raised an autograd error here.
            grad = dict(ift=False, grad=1, tau=1.0)
        else:
            grad = dict(ift=False, grad=c.phantom_steps, tau=c.phantom_tau)
        return get_deq(core="indexing", f_solver=settings.solver, f_max_iter=settings.max_iter,
                       f_tol=settings.tol, f_stop_mode=settings.stop_mode, eval_f_max_iter=settings.max_iter, **grad)

    @property
    def settings(self) -> SolverSettings:
        """The solver settings of the current mode (``config.train`` or ``config.eval``)."""
        return self.config.train if self.training else self.config.eval

    def correction(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The update map's parts for chart parameters ``z: (B, *unconstrained_shape)`` and the update's input
        ``x: (B, C, H, W)``: ``(P(z), Δ)``, each ``(B, *unconstrained_shape)`` (see
        [`UpdateCanonicalizer.correction`][equican.canon.direct.UpdateCanonicalizer.correction]); with
        ``config.bound = b`` the whole bounded map ``(b·tanh((P(z) + Δ)/b), 0)``, so that the solve, the gradient
        and the measured residual all see the same map (its iterates are at most ``b``, where the float32
        cancellation the split guards against cannot occur)."""
        projected, dz = super().correction(z, x)
        if self.config.bound is None:
            return projected, dz
        b = self.config.bound
        return b * torch.tanh((projected + dz) / b), torch.zeros_like(dz)

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Solve ``z* = f_θ(z*; x)`` from ``z = 0`` for ``x: (B, C, H, W)`` with the current mode's settings.

        Robust per input: an input whose update turns non-finite is held at the identity inside the solve (so that
        it cannot poison the others, e.g. through Anderson's least-squares step), and falls back to the identity in
        the result. If the Anderson or Broyden step fails on a singular system, the solve is repeated with plain
        fixed-point iteration, which solves no linear system.

        Returns:
            ``(z, info)``: the fixed points ``(B, *unconstrained_shape)`` (the identity's zeros for inputs that fall
            back) and the solver statistics listed in the class docstring.

        Warns:
            ConvergenceWarning: some input did not reach the residual tolerance (once per call).
        """
        settings = self.settings
        core = self.train_core if self.training else self.eval_core
        features = self.update_input(x)
        b = x.shape[0]
        if b == 0:
            empty = x.new_zeros((0,))
            return self.zeros(x), {"residual": x.new_zeros((0, 0)), "residual_best": empty, "residual_true": empty,
                                   "steps": empty.long(), "converged": empty.bool(), "fallback": empty.bool()}
        diverged = torch.zeros(b, dtype=torch.bool, device=x.device)
        flag = [False]  # set by the gradient guard when the backward pass meets a non-finite gradient

        def update(z: torch.Tensor) -> torch.Tensor:
            nonlocal diverged
            fz = self.step(z, features)  # a non-finite z acts as the identity (Canonicalizer.elements)
            ok = _rows(torch.isfinite(fz), fz)
            diverged = diverged | ~ok.flatten(1).all(dim=1)
            fz = torch.where(ok, fz, torch.zeros_like(fz))
            return _GradGuard.apply(fz, flag) if torch.is_grad_enabled() and fz.requires_grad else fz

        try:
            z_out, stats = core(update, self.zeros(x), solver_kwargs=self._solver_kwargs(settings))
        except torch.linalg.LinAlgError:
            # Anderson/Broyden solve a small linear system per input; one singular system fails the whole batch.
            # Plain iteration solves none, so every other input still gets its answer.
            fallback_core = self._core(replace(settings, solver="fixed_point_iter"))
            fallback_core.train(self.training)
            z_out, stats = fallback_core(update, self.zeros(x), solver_kwargs={})
        z = z_out[-1]
        residual, scale, residual_loss = self._true_residual(z.detach(), features)
        finite = torch.isfinite(z.detach()).flatten(1).all(dim=1) & torch.isfinite(residual) & ~diverged
        # Relative mode: ‖f(z) − z‖ / (1 + ‖f(z)‖): relative where the iterate is large, absolute near the identity
        # z = 0, where a pure ratio is undefined (and where an untrained canonicalizer sits).
        measured = residual / (1 + scale) if settings.stop_mode == "rel" else residual
        converged = finite & (measured < settings.tol)
        fallback = ~finite if self.config.on_nonconvergence == "best" else ~converged
        if not bool(converged.all()):
            # The message names only the settings, not this batch's counts and residuals: Python shows a warning
            # once per distinct message and place, so a training loop gets one line, not one per step. The numbers
            # are in info ("converged", "residual_true").
            warnings.warn(ConvergenceWarning(
                f"DEQCanonicalizer: some inputs did not reach the {settings.stop_mode} residual tolerance "
                f"{settings.tol:g} within {settings.max_iter} iterations; they get the "
                f"{self.config.on_nonconvergence} policy (per input: result.info['converged'], "
                f"info['residual_true'])"), stacklevel=3)
        z = torch.where(_rows(~fallback, z), z, torch.zeros_like(z))
        # torchdeq's trace opens with a placeholder (1e8) before the first step: drop it.
        trace = stats[f"{settings.stop_mode}_trace"][:, 1:].to(x.device)
        info = {"residual": trace, "residual_best": stats[f"{settings.stop_mode}_lowest"].to(x.device),
                "residual_true": measured, "steps": stats["nstep"].to(x.device).long(), "converged": converged,
                "fallback": fallback}
        if residual_loss is not None:
            info["residual_loss"] = residual_loss
        if self.training and self.config.jacobian_weight:
            info["jacobian"] = self._jacobian_penalty(z.detach(), features)
        return z, info

    @staticmethod
    def _solver_kwargs(settings: SolverSettings) -> dict[str, Any]:
        return {"tau": settings.damping} if settings.damping != 1 else {}

    def regularizer(self, info: dict[str, Any]) -> torch.Tensor | float:
        """What a training-mode solve put in ``info`` for training the map to converge, a scalar (0-d tensor):
        ``residual_weight`` times the mean squared residual of the returned iterate, plus ``jacobian_weight`` times
        the Jacobian penalty (0 when both weights are 0)."""
        total: torch.Tensor | float = 0.0
        if "residual_loss" in info:
            total = total + self.config.residual_weight * info["residual_loss"]
        if "jacobian" in info:
            total = total + self.config.jacobian_weight * info["jacobian"]
        return total

    def _true_residual(self, z: torch.Tensor, features: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(‖f(z) − z‖, ‖f(z)‖, loss)`` for the returned iterate ``z`` (detached), from one more evaluation of the
        update map; the first two are ``(B,)``, the loss is the batch mean of ``‖f(z) − z‖²`` with gradient (only in
        training mode with ``residual_weight > 0``; else None).

        ``f(z) − z`` is formed as ``(P(z) − z) + Δ`` in float64: at large ``|z|`` a float32 ``f(z) − z`` absorbs
        the update and reads 0 (a rotation iterate at 4e8 rad whose update is −9 would count as converged).
        """
        trained = self.training and self.config.residual_weight > 0
        z_safe = torch.where(_rows(torch.isfinite(z), z), z, torch.zeros_like(z))
        with torch.set_grad_enabled(trained and torch.is_grad_enabled()):
            projected, dz = self.correction(z_safe, features)
        loss = ((projected - z_safe) + dz).flatten(1).pow(2).sum(dim=1).mean() if trained else None
        projected, dz = projected.detach().double(), dz.detach().double()
        residual = ((projected - z_safe.double()) + dz).flatten(1).norm(dim=1)
        inf = torch.full_like(residual, float("inf"))
        residual = torch.where(torch.isfinite(z).flatten(1).all(dim=1), residual, inf)
        scale = (projected + dz).flatten(1).norm(dim=1)
        return residual.to(z.dtype), scale.to(z.dtype), loss

    def _jacobian_penalty(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """torchdeq's Hutchinson estimate of ``‖∂f/∂z‖_F²`` (per dimension) at the fixed point, a scalar tensor:
        ``‖vᵀ ∂f/∂z‖² / numel(z)`` for one standard normal ``v`` (``torchdeq.loss.jac_reg`` with ``vecs=1``).

        Small Jacobians make the update map contract near its fixed point, so the solver converges in few
        iterations (Bai et al., "Stabilizing Equilibrium Models by Jacobian Regularization", 2021).

        Exactly 0, without evaluating the map, over a discrete group, and 0 wherever the map does not depend on
        ``z`` differentiably: ``jac_reg`` raised an autograd RuntimeError there ("a differentiated tensor appears to
        not have been used in the graph"), which crashed every training step of a cyclic or dihedral DEC with
        ``jacobian_weight > 0``.
        """
        zero = z.new_zeros(())
        if self.group.discrete:
            return zero  # the update sees z only through an argmax: ∂f/∂z = 0 almost everywhere
        with torch.enable_grad():
            z0 = z.detach().requires_grad_()
            f0 = self.step(z0, features)
            if not f0.requires_grad:
                return zero
            v = torch.randn(*z0.shape).to(z0)  # as jac_reg draws it
            (vjp,) = torch.autograd.grad(f0, z0, v, retain_graph=True, create_graph=True, allow_unused=True)
            if vjp is None:
                return zero
            return vjp.norm() ** 2 / z0.numel()

    def extra_repr(self) -> str:
        return f"group={self.group!r}, config={self.config!r}"


class _GradGuard(torch.autograd.Function):
    """Identity forward; backward replaces a non-finite gradient row by zeros and records that it happened.

    Sits on the update map's output, so it sees the implicit gradient's adjoint solution (and the phantom
    gradient's): a diverging backward solve then costs the affected inputs their gradient, and is reported with a
    ConvergenceWarning, instead of spreading NaN into every parameter.
    """

    @staticmethod
    def forward(ctx: Any, fz: torch.Tensor, flag: list[bool]) -> torch.Tensor:
        ctx.flag = flag
        return fz.view_as(fz)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ok = _rows(torch.isfinite(grad), grad)
        if not bool(ok.all()):
            if not ctx.flag[0]:
                warnings.warn(ConvergenceWarning(
                    "DEQCanonicalizer: the backward pass produced a non-finite gradient (a diverging implicit "
                    "solve); the affected inputs' gradients were set to 0. Try gradient='phantom', a smaller "
                    "learning rate, or jacobian_weight > 0"), stacklevel=2)
            ctx.flag[0] = True
            grad = torch.where(ok, grad, torch.zeros_like(grad))
        return grad, None

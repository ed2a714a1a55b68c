"""The group laws as checkers that measure: every law returns its error and the tolerance it was held to.

Each law is a function ``law(group, setup) -> list[LawResult]`` in [`LAWS`][equican.testing.laws.LAWS], keyed by a short
name. The same functions serve [`check_group_laws`][equican.testing.laws.check_group_laws] (all laws for one seed), the
hypothesis-driven [`GroupContract`][equican.testing.contract.GroupContract], the registry-parametrized contract tests of
this repository, and [`measure_law_errors`][equican.testing.laws.measure_law_errors] (the tolerance measurements written
into every group's ``tolerance``).

Protocol:
    The tolerances of [`equican.Group.tolerance`][equican.group.Group.tolerance] are measured under it.

    * Elements come from ``group.sample`` and images from [`equican.testing.images`][equican.testing.images], all drawn
      from one ``torch.Generator(device).manual_seed(seed)`` per law, in a fixed order; no law touches the global RNG.
    * Algebraic laws (identity, inverse, associativity, chart) compare elements with ``group.distance``, the largest
      over the batch, against ``tolerance(dtype).element``.
    * Action laws (``act(identity) = id``, homomorphism, inverse action through ``inverse`` and through
      ``act_inverse``) take the largest absolute pixel difference
      against ``tolerance(dtype).action``: for ``exact`` groups over whole white-noise images, for the others over
      the [`interior`][equican.testing.images.interior] of band-limited images (2 channels, ``size × size``).
    * Pass/fail laws (shapes and dtypes, inputs unchanged, randomness, chart validity, gradcheck) report as error the
      number of violations, with tolerance 0, and say what went wrong in ``detail``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.autograd.gradcheck import GradcheckError

from .. import validation as V
from ..errors import ConfigError
from ..group import Group
from .images import band_limited_images, interior, white_noise_images

__all__ = ["LawResult", "LawReport", "LawSetup", "LAWS", "DEFAULT_LAWS", "VERDICT_LAWS", "check_group_laws",
           "run_law", "measure_law_errors"]

#: Channels of the law images: more than one, so that an action mixing or dropping channels is caught.
_CHANNELS = 2
#: Batch and size of the gradcheck inputs: finite differences cost one evaluation per input entry.
_GRADCHECK_BATCH, _GRADCHECK_SIZE = 2, 8


@dataclass(frozen=True)
class LawResult:
    """One measured law.

    Attributes:
        law: the law's name, e.g. ``"inverse_left"``.
        error: the measured error (a distance, a pixel difference, or a count of violations); NaN never passes.
        tolerance: the bound it was held to.
        detail: what went wrong, for pass/fail laws and laws that raised.
    """

    law: str
    error: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        """``error <= tolerance`` (False for a NaN error)."""
        return bool(self.error <= self.tolerance)

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        text = f"{self.law}: error {self.error:.3g}, tolerance {self.tolerance:.3g}: {verdict}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class LawSetup:
    """The sizes, dtype, device and seed a law is measured with.

    Attributes:
        seed: seeds the one ``torch.Generator(device)`` each law draws everything from.
        batch: elements and images per law.
        size: height and width of the law images (the tolerances are measured at the default, 32).
        dtype: float32 or float64.
        device: where elements and images live.
    """

    seed: int = 0
    batch: int = 4
    size: int = 32
    dtype: torch.dtype = torch.float64
    device: str = "cpu"

    def __post_init__(self) -> None:
        where = "LawSetup"
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"{where}: expected seed to be an int in [0, 2**63), got {self.seed!r}")
        V.require_int(self.batch, low=1, where=where, name="batch")
        V.require_int(self.size, low=8, where=where, name="size")
        if self.dtype not in V.FLOAT_DTYPES:
            raise ConfigError(f"{where}: expected dtype float32 or float64, got {self.dtype}")
        object.__setattr__(self, "device", str(torch.device(self.device)))

    def generator(self) -> torch.Generator:
        """A fresh generator on ``device`` seeded with ``seed``."""
        return torch.Generator(device=self.device).manual_seed(self.seed)

    def sample(self, group: Group, generator: torch.Generator, batch: int | None = None) -> torch.Tensor:
        """``group.sample`` with this setup's batch, dtype and device: ``(batch, *param_shape)``."""
        return group.sample(self.batch if batch is None else batch, generator=generator, device=self.device,
                            dtype=self.dtype)

    def identity(self, group: Group) -> torch.Tensor:
        """``group.identity`` with this setup's batch, dtype and device: ``(batch, *param_shape)``."""
        return group.identity(self.batch, device=self.device, dtype=self.dtype)

    def images(self, group: Group, generator: torch.Generator) -> torch.Tensor:
        """The law images ``(batch, 2, size, size)``: white noise for exact groups, band-limited otherwise."""
        make = white_noise_images if group.exact else band_limited_images
        return make(self.batch, _CHANNELS, self.size, generator=generator, dtype=self.dtype, device=self.device)


@dataclass(frozen=True)
class LawReport:
    """The results of several laws for one group, dtype and setup.

    Attributes:
        group: the group checked.
        dtype: the dtype of its elements and images.
        results: one [`LawResult`][equican.testing.laws.LawResult] per measured law, in
            [`LAWS`][equican.testing.laws.LAWS] order.
        setup: the seed, sizes and device used (None when the report was assembled by hand).
    """

    group: Group
    dtype: torch.dtype
    results: tuple[LawResult, ...]
    setup: LawSetup | None = field(default=None)

    @property
    def passed(self) -> bool:
        """True when every law in the report passed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[LawResult, ...]:
        """The results of the laws that failed, in report order (empty when all passed)."""
        return tuple(r for r in self.results if not r.passed)

    def __getitem__(self, law: str) -> LawResult:
        for result in self.results:
            if result.law == law:
                return result
        raise KeyError(f"no law {law!r} in this report; it has {', '.join(r.law for r in self.results)}")

    def _title(self) -> str:
        where = f"group laws of {self.group!r} in {str(self.dtype).removeprefix('torch.')}"
        if self.setup is not None:
            s = self.setup
            where += f" on {s.device} (seed {s.seed}, batch {s.batch}, size {s.size})"
        return where

    def __str__(self) -> str:
        width = max([len("law")] + [len(r.law) for r in self.results])
        lines = [self._title(), f"  {'law':<{width}}  {'error':>10}  {'tolerance':>10}  result"]
        for r in self.results:
            verdict = "ok" if r.passed else "FAILED"
            line = f"  {r.law:<{width}}  {r.error:>10.3g}  {r.tolerance:>10.3g}  {verdict}"
            lines.append(f"{line}  {r.detail}" if r.detail and not r.passed else line)
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise AssertionError listing every failed law with its measured error and tolerance."""
        if self.passed:
            return
        listed = "\n".join(f"  {r}" for r in self.failures)
        raise AssertionError(f"{len(self.failures)} law(s) failed, {self._title()}:\n{listed}\n\n{self}")


LawFn = Callable[[Group, LawSetup], list[LawResult]]


# ---------------------------------------------------------------------------------------------- measures
def _element_error(group: Group, g: torch.Tensor, h: torch.Tensor) -> float:
    """Largest ``group.distance`` over the batch, as a Python float."""
    return float(group.distance(g, h).max())


def _action_error(group: Group, a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute pixel difference: whole image for exact groups, the interior crop otherwise."""
    diff = a - b if group.exact else interior(a) - interior(b)
    return float(diff.abs().max())


def _element_law(group: Group, setup: LawSetup, law: str, g: torch.Tensor, h: torch.Tensor) -> LawResult:
    return LawResult(law, _element_error(group, g, h), group.tolerance(setup.dtype).element)


def _action_law(group: Group, setup: LawSetup, law: str, a: torch.Tensor, b: torch.Tensor) -> LawResult:
    tolerance = group.tolerance(setup.dtype).action
    if a.shape != b.shape:  # broadcasting would compare a dropped channel against every channel and hide it
        return LawResult(law, math.inf, tolerance, f"shapes differ: {V.fmt_shape(a.shape)} and {V.fmt_shape(b.shape)}")
    return LawResult(law, _action_error(group, a, b), tolerance)


VERDICT_LAWS = frozenset({"shapes_dtypes", "inputs_unchanged", "randomness", "chart_valid", "gradcheck_x",
                          "gradcheck_g"})
"""The pass/fail laws: their error is a count of violations, not a measurement."""


def _verdict(law: str, problems: list[str]) -> LawResult:
    assert law in VERDICT_LAWS, law  # internal consistency of this module, not user input
    return LawResult(law, float(len(problems)), 0.0, "; ".join(problems))


# ---------------------------------------------------------------------------------------------- the laws
def law_identity(group: Group, setup: LawSetup) -> list[LawResult]:
    """``compose(e, g) = g`` and ``compose(g, e) = g``."""
    g = setup.sample(group, setup.generator())
    e = setup.identity(group)
    return [_element_law(group, setup, "identity_left", group.compose(e, g), g),
            _element_law(group, setup, "identity_right", group.compose(g, e), g)]


def law_inverse(group: Group, setup: LawSetup) -> list[LawResult]:
    """``compose(inverse(g), g) = e`` and ``compose(g, inverse(g)) = e``."""
    g = setup.sample(group, setup.generator())
    g_inv, e = group.inverse(g), setup.identity(group)
    return [_element_law(group, setup, "inverse_left", group.compose(g_inv, g), e),
            _element_law(group, setup, "inverse_right", group.compose(g, g_inv), e)]


def law_associativity(group: Group, setup: LawSetup) -> list[LawResult]:
    """``compose(compose(g, h), k) = compose(g, compose(h, k))``."""
    generator = setup.generator()
    g, h, k = (setup.sample(group, generator) for _ in range(3))
    return [_element_law(group, setup, "associativity", group.compose(group.compose(g, h), k),
                         group.compose(g, group.compose(h, k)))]


def law_act_identity(group: Group, setup: LawSetup) -> list[LawResult]:
    """``act(e, x) = x``."""
    x = setup.images(group, setup.generator())
    return [_action_law(group, setup, "act_identity", group.act(setup.identity(group), x), x)]


def law_homomorphism(group: Group, setup: LawSetup) -> list[LawResult]:
    """``act(compose(g, h), x) = act(g, act(h, x))``: the action respects composition order."""
    generator = setup.generator()
    g, h = setup.sample(group, generator), setup.sample(group, generator)
    x = setup.images(group, generator)
    return [_action_law(group, setup, "homomorphism", group.act(group.compose(g, h), x),
                        group.act(g, group.act(h, x)))]


def law_inverse_action(group: Group, setup: LawSetup) -> list[LawResult]:
    """``act(inverse(g), act(g, x)) = x`` and ``act_inverse(g, act(g, x)) = x``: canonicalizing undoes the
    transformation, through the six members and through the ``act_inverse`` helper a group may override."""
    generator = setup.generator()
    g = setup.sample(group, generator)
    x = setup.images(group, generator)
    moved = group.act(g, x)
    return [_action_law(group, setup, "inverse_action", group.act(group.inverse(g), moved), x),
            _action_law(group, setup, "act_inverse", group.act_inverse(g, moved), x)]


def law_shapes(group: Group, setup: LawSetup) -> list[LawResult]:
    """Every member returns the documented shape, dtype and device, and leaves its arguments unmodified."""
    generator = setup.generator()
    b, dtype, device = setup.batch, setup.dtype, torch.device(setup.device)
    element_shape = (b, *group.param_shape)
    problems: list[str] = []

    def expect(what: str, t: object, shape: tuple[int, ...]) -> None:
        if not isinstance(t, torch.Tensor):
            problems.append(f"{what} returned {type(t).__name__}, expected a tensor")
        elif tuple(t.shape) != shape or t.dtype != dtype or t.device.type != device.type:
            problems.append(f"{what}: expected {V.fmt_shape(shape)} {dtype} on {device}, "
                            f"got {V.fmt_shape(t.shape)} {t.dtype} on {t.device}")

    e, g, h = setup.identity(group), setup.sample(group, generator), setup.sample(group, generator)
    x = setup.images(group, generator)
    expect("identity", e, element_shape)
    expect("sample", g, element_shape)
    originals = {"g": g.clone(), "h": h.clone(), "x": x.clone()}
    expect("compose", group.compose(g, h), element_shape)
    expect("inverse", group.inverse(g), element_shape)
    expect("act", group.act(g, x), tuple(x.shape))
    expect("act_inverse", group.act_inverse(g, x), tuple(x.shape))
    expect("distance", group.distance(g, h), (b,))
    z = group.to_unconstrained(g)
    expect("to_unconstrained", z, (b, *group.unconstrained_shape))
    if isinstance(z, torch.Tensor):
        expect("from_unconstrained", group.from_unconstrained(z), element_shape)
    changed = [name for name, t in (("g", g), ("h", h), ("x", x)) if not torch.equal(t, originals[name])]
    return [_verdict("shapes_dtypes", problems),
            _verdict("inputs_unchanged", [f"{name} was modified in place" for name in changed])]


def law_randomness(group: Group, setup: LawSetup) -> list[LawResult]:
    """``sample`` is a function of the generator's state alone: reproducible, and the global RNG is untouched."""
    problems: list[str] = []
    cpu_state = torch.get_rng_state()
    cuda = torch.device(setup.device).type == "cuda"
    cuda_state = torch.cuda.get_rng_state(setup.device) if cuda else None
    first, second = setup.sample(group, setup.generator()), setup.sample(group, setup.generator())
    if not torch.equal(first, second):
        problems.append("two generators with the same seed gave different samples")
    if not torch.equal(cpu_state, torch.get_rng_state()):
        problems.append("sample advanced the global CPU RNG")
    if cuda and not torch.equal(cuda_state, torch.cuda.get_rng_state(setup.device)):
        problems.append("sample advanced the global CUDA RNG")
    return [_verdict("randomness", problems)]


def law_chart(group: Group, setup: LawSetup) -> list[LawResult]:
    """``from_unconstrained(0) = e``, ``from_unconstrained(to_unconstrained(g)) = g``, and every ``z`` is valid."""
    generator = setup.generator()
    g = setup.sample(group, generator)
    z_shape = (setup.batch, *group.unconstrained_shape)
    zeros = torch.zeros(z_shape, device=setup.device, dtype=setup.dtype)
    z = torch.randn(z_shape, generator=generator, device=generator.device, dtype=setup.dtype).to(setup.device)
    problems = []
    reason = group.invalid_reason(group.from_unconstrained(z))
    if reason is not None:
        problems.append(f"from_unconstrained(z) for z ~ N(0, 1) is not a valid element: {reason}")
    return [_element_law(group, setup, "chart_identity", group.from_unconstrained(zeros), setup.identity(group)),
            _element_law(group, setup, "chart_roundtrip", group.from_unconstrained(group.to_unconstrained(g)), g),
            _verdict("chart_valid", problems)]


def law_gradcheck(group: Group, setup: LawSetup) -> list[LawResult]:
    """float64 ``torch.autograd.gradcheck`` of ``act`` in ``x``, and in ``g`` through the chart.

    Finite differences in ``g`` are taken along ``from_unconstrained``: only the chart's directions stay in the
    group (a monotone warp's border nodes sit exactly on the image edge, where bilinear sampling has a kink, and no
    valid element moves them). Discrete groups (``group.discrete``) have no tangent directions and are checked in
    ``x`` only. Uses batch 2 and 8×8 images whatever the setup's sizes, and gradcheck's fast mode, which compares
    a random projection ``vᵀ J u`` of the analytical and numerical Jacobians (torch draws ``u, v`` from its own
    seeded generator): any wrong Jacobian entry changes the projection, at a hundredth of the cost of comparing
    full Jacobians (measured 0.1 s against 2 to 13 s for the monotone group on this machine).
    """
    small = LawSetup(seed=setup.seed, batch=_GRADCHECK_BATCH, size=_GRADCHECK_SIZE, dtype=torch.float64,
                     device=setup.device)
    generator = small.generator()
    g = small.sample(group, generator)
    x = white_noise_images(small.batch, _CHANNELS, small.size, generator=generator, device=small.device)

    def gradcheck(law: str, fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> LawResult:
        try:
            torch.autograd.gradcheck(fn, (inputs.detach().requires_grad_(),), fast_mode=True, raise_exception=True)
        except GradcheckError as exc:
            first = str(exc).strip().splitlines()[0]
            return _verdict(law, [f"analytical and numerical Jacobians differ: {first}"])
        except Exception as exc:  # noqa: BLE001 - e.g. an output cut off from the input's graph
            return _verdict(law, [f"raised {type(exc).__name__}: {exc}"])
        return _verdict(law, [])

    results = [gradcheck("gradcheck_x", lambda x_: group.act(g, x_), x)]
    if not group.discrete:
        results.append(gradcheck("gradcheck_g", lambda z_: group.act(group.from_unconstrained(z_), x),
                                 group.to_unconstrained(g)))
    return results


LAWS: dict[str, LawFn] = {
    "identity": law_identity,
    "inverse": law_inverse,
    "associativity": law_associativity,
    "act_identity": law_act_identity,
    "homomorphism": law_homomorphism,
    "inverse_action": law_inverse_action,
    "shapes": law_shapes,
    "randomness": law_randomness,
    "chart": law_chart,
    "gradcheck": law_gradcheck,
}
"""Every law, by name, in the order reports list them."""

DEFAULT_LAWS: tuple[str, ...] = tuple(name for name in LAWS if name != "gradcheck")
"""The laws [`check_group_laws`][equican.testing.laws.check_group_laws] runs unless ``gradcheck=True`` (which adds the
slower gradcheck)."""


# ---------------------------------------------------------------------------------------------- entry points
def _require_group(group: object, where: str) -> Group:
    return V.require_group(group, where=where)


def _run(name: str, group: Group, setup: LawSetup) -> list[LawResult]:
    """One law; an exception inside the group becomes a failed result rather than aborting the report."""
    try:
        return LAWS[name](group, setup)
    except Exception as exc:  # noqa: BLE001 - the report must show which law raised and why
        return [LawResult(name, math.inf, 0.0, f"raised {type(exc).__name__}: {exc}")]


def run_law(name: str, group: Group, *, seed: int = 0, batch: int = 4, size: int = 32,
            dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> LawReport:
    """Measure one law of [`LAWS`][equican.testing.laws.LAWS] (e.g. ``"homomorphism"``); returns a report of its
    results."""
    _require_group(group, "run_law")
    if name not in LAWS:
        raise ConfigError(f"run_law: expected a law name among {', '.join(LAWS)}, got {name!r}")
    setup = LawSetup(seed=seed, batch=batch, size=size, dtype=dtype, device=str(device))
    return LawReport(group, dtype, tuple(_run(name, group, setup)), setup)


def check_group_laws(group: Group, *, seed: int = 0, batch: int = 4, size: int = 32,
                     dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
                     gradcheck: bool = False) -> LawReport:
    """Measure every group law for one seed and return the report (call ``raise_if_failed()`` to assert).

    Args:
        group: the group to check.
        seed: seeds the generator each law draws its elements and images from.
        batch: elements (and images) per law.
        size: height and width of the law images; the tolerances are measured at 32.
        dtype: float32 or float64.
        device: where elements and images live.
        gradcheck: also run the float64 gradcheck of ``act`` in ``x`` and ``g`` (slower).

    Returns:
        A [`LawReport`][equican.testing.laws.LawReport]; ``print(report)`` shows the table of errors and tolerances.

    Example:
        >>> check_group_laws(make_group("rotation")).raise_if_failed()
    """
    _require_group(group, "check_group_laws")
    setup = LawSetup(seed=seed, batch=batch, size=size, dtype=dtype, device=str(device))
    names = tuple(LAWS) if gradcheck else DEFAULT_LAWS
    return LawReport(group, dtype, tuple(r for name in names for r in _run(name, group, setup)), setup)


def measure_law_errors(group: Group, *, seeds: int = 200, batch: int = 4, size: int = 32,
                       dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> dict[str, float]:
    """The largest error of every measured (non pass/fail) law over ``seeds`` seeds: how to set ``tolerance``.

    Runs [`check_group_laws`][equican.testing.laws.check_group_laws] for seeds ``0 .. seeds-1`` and keeps, per law, the
    maximum error. A group's ``tolerance(dtype)`` should bound these with a margin (this repository uses about 1.5×) and
    say so in a comment.

    Returns:
        ``{law: max error}`` for the element and action laws (identity, inverse, associativity, act_identity,
        homomorphism, inverse_action, chart_identity, chart_roundtrip).
    """
    _require_group(group, "measure_law_errors")
    worst: dict[str, float] = {}
    for seed in range(seeds):
        report = check_group_laws(group, seed=seed, batch=batch, size=size, dtype=dtype, device=device)
        if any(math.isinf(r.error) for r in report.results):
            report.raise_if_failed()  # a law that raised measured nothing: report it rather than skip it
        for r in report.results:
            if r.law not in VERDICT_LAWS:  # pass/fail laws count violations, they measure nothing
                worst[r.law] = max(worst.get(r.law, 0.0), r.error)
    return worst

"""The pytest plugin of equican: fixtures for a group, seeded images and canonicalizers, and the library's contracts
run on a user's own group and canonicalizer from the command line.

Installed with equican (the ``pytest11`` entry point ``equican``), so a user's suite needs no wiring. Fixtures:

* ``equican_group``: the group named by ``--equican-group`` (one test per named group), or your own: define a fixture
  of that name in your ``conftest.py`` to override it.
* ``equican_seed``: the seed of ``--equican-seed`` (default 0).
* ``equican_images``: a seeded batch of band-limited images ``(4, 1, 32, 32)``, float64: the images the built-in
  groups' tolerances are measured on.
* ``make_equican_canonicalizer``: a factory, ``make_equican_canonicalizer(kind, group=None, in_channels=1,
  options=None)``, that builds a registered kind with seeded weights, in evaluation mode (``group`` defaults to
  ``equican_group``).

Options (``pytest --help``, section "equican"):

* ``--equican-group NAME[:KEY=VALUE,...]`` (repeatable): a registered group (yours too: register it in a module your
  ``conftest.py`` imports), with constructor options, e.g. ``cyclic:n=4``. It parametrizes ``equican_group``, and
  adds the **group-law contract**: one test per law of [`LAWS`][equican.testing.laws.LAWS], hypothesis-driven as in
  [`GroupContract`][equican.testing.contract.GroupContract].
* ``--equican-canonicalizer KIND|MODULE:NAME`` (repeatable): with ``--equican-group``, adds the **canonicalizer
  contract** for each named group: invariance of the canonical input, equivariance of the element and the round trip
  ([`equican.testing.canon`][equican.testing.canon]) for hypothesis-drawn seeds and batch sizes. ``KIND`` is a
  registered canonicalizer kind (built with seeded weights); ``MODULE:NAME`` names a callable of yours that takes the
  group and returns a canonicalizer (a ``Canonicalizer`` subclass taking the group, or a factory).
* ``--equican-atol X`` and ``--equican-crop N``: the canonicalizer contract's tolerance (default: the group's own,
  ``group.tolerance(float64)``, action for images, element for elements) and the border ignored.

Hypothesis draws as the suite's loaded profile says (the plugin registers and loads no profile).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["parse_group_spec", "resolve_canonicalizer", "ContractItem"]

_SIZE, _MAX_BATCH, _CHANNELS = 32, 4, 1
_CANON_CHECKS = ("invariance", "g_equivariance", "round_trip")


# ---------------------------------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equican", "equican: group-law and canonicalizer contracts")
    group.addoption("--equican-group", action="append", default=[], dest="equican_group",
                    metavar="NAME[:KEY=VALUE,...]",
                    help="a registered group (e.g. rotation, cyclic:n=4): parametrizes the equican_group fixture "
                         "and runs the group-law contract on it (repeatable)")
    group.addoption("--equican-canonicalizer", action="append", default=[], dest="equican_canonicalizer",
                    metavar="KIND|MODULE:NAME",
                    help="a registered canonicalizer kind, or MODULE:NAME of a callable taking the group and "
                         "returning a canonicalizer: runs the canonicalizer contract on every --equican-group")
    group.addoption("--equican-seed", type=int, default=0, dest="equican_seed", metavar="N",
                    help="the seed of the equican_images and make_equican_canonicalizer fixtures (default 0)")
    group.addoption("--equican-atol", type=float, default=None, dest="equican_atol", metavar="X",
                    help="the canonicalizer contract's tolerance (default: the group's own tolerance)")
    group.addoption("--equican-crop", type=int, default=0, dest="equican_crop", metavar="N",
                    help="pixels ignored at every border by the canonicalizer contract (default 0)")


def pytest_configure(config: pytest.Config) -> None:
    for spec in config.getoption("equican_group") or ():
        parse_group_spec(spec)  # a malformed option stops the run before anything is collected


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string option


def parse_group_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"cyclic:n=4,size=8"`` -> ``("cyclic", {"n": 4, "size": 8})``; values are Python literals or bare strings.

    Raises:
        pytest.UsageError: an option that is not ``KEY=VALUE``.
    """
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise pytest.UsageError(f"--equican-group: expected NAME[:KEY=VALUE,...], got {spec!r} (the option "
                                    f"{item!r} is not KEY=VALUE)")
        options[key.strip()] = _value(value.strip())
    return name.strip(), options


def _make_group(spec: str) -> Any:
    from ..errors import EquicanError
    from ..group import make_group

    name, options = parse_group_spec(spec)
    try:
        return make_group(name, **options)
    except (EquicanError, TypeError) as exc:
        raise pytest.UsageError(f"--equican-group {spec}: {exc}") from None


def resolve_canonicalizer(spec: str, group: Any, *, seed: int = 0) -> Any:
    """The canonicalizer ``spec`` names, for ``group``: ``MODULE:NAME`` is imported and called with the group;
    otherwise ``spec`` is a registered kind, built with weights seeded by ``seed`` in float64; in evaluation mode.
    The contract checks it in the dtype of its parameters (float64 when it has none).

    Raises:
        pytest.UsageError: the module or name cannot be found, the kind is not registered, or the callable did not
            return an ``equican.Canonicalizer``.
    """
    import torch

    from ..canon.base import Canonicalizer

    where = f"--equican-canonicalizer {spec}"
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise pytest.UsageError(f"{where}: expected MODULE:NAME of an importable callable, got "
                                    f"{type(exc).__name__}: {exc}") from None
        canon = factory(group)
    else:
        canon = _build_kind(spec, group, 1, None, seed=seed, where=where).to(torch.float64)
    if not isinstance(canon, Canonicalizer):
        raise pytest.UsageError(f"{where}: expected an equican.Canonicalizer, got {type(canon).__name__}")
    return canon.eval()


def _build_kind(kind: str, group: Any, in_channels: int | None, options: dict[str, Any] | None, *, seed: int,
                where: str) -> Any:
    import torch

    from ..canon.registry import make_canonicalizer
    from ..errors import UnknownNameError

    with torch.random.fork_rng(devices=[]):  # seeded weights, and the suite's global RNG left as it was
        torch.manual_seed(seed)
        try:
            return make_canonicalizer(kind, group, in_channels, options)
        except UnknownNameError as exc:
            raise pytest.UsageError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------- fixtures
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    specs = metafunc.config.getoption("equican_group")
    if not specs or "equican_group" not in metafunc.fixturenames:
        return  # the common case: nothing more to look at
    explicit = {n for m in metafunc.definition.iter_markers("parametrize") for n in
                ([a.strip() for a in m.args[0].split(",")] if m.args and isinstance(m.args[0], str)
                 else (m.args[0] if m.args else ()))}
    if "equican_group" not in explicit:
        metafunc.parametrize("equican_group", specs, ids=specs, indirect=True)


@pytest.fixture
def equican_group(request: pytest.FixtureRequest) -> Any:
    """The group of ``--equican-group`` (each named group in turn); override the fixture to test your own."""
    spec = getattr(request, "param", None)
    if spec is None:
        pytest.fail("equican_group: expected a group from --equican-group NAME (or an equican_group fixture of "
                    "your own in conftest.py), got neither", pytrace=False)
    return _make_group(spec)


@pytest.fixture
def equican_seed(request: pytest.FixtureRequest) -> int:
    """The seed given with ``--equican-seed`` (default 0)."""
    return int(request.config.getoption("equican_seed"))


@pytest.fixture
def equican_images(equican_seed: int) -> Any:
    """Seeded band-limited images ``(4, 1, 32, 32)``, float64 (smooth, inside a central disc)."""
    import torch

    from .images import band_limited_images

    return band_limited_images(_MAX_BATCH, _CHANNELS, _SIZE, generator=torch.Generator().manual_seed(equican_seed),
                               dtype=torch.float64)


@pytest.fixture
def make_equican_canonicalizer(request: pytest.FixtureRequest, equican_seed: int) -> Callable[..., Any]:
    """A factory ``(kind, group=None, in_channels=1, options=None) -> Canonicalizer``: a registered kind with weights
    seeded by ``equican_seed``, in float64 (the dtype of ``equican_images``) and evaluation mode; ``group`` defaults
    to the ``equican_group`` fixture."""

    import torch

    def make(kind: str, group: Any = None, in_channels: int | None = 1, options: dict[str, Any] | None = None) -> Any:
        group = request.getfixturevalue("equican_group") if group is None else group
        return _build_kind(kind, group, in_channels, options, seed=equican_seed,
                           where="make_equican_canonicalizer").to(torch.float64).eval()

    return make


# ---------------------------------------------------------------------------------------------- contracts
class ContractItem(pytest.Item):
    """One contract check added by ``--equican-group``: runs ``check()``."""

    def __init__(self, *, check: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check = check

    def runtest(self) -> None:
        """Run the check; it raises AssertionError (with hypothesis's failing example) on a violation."""
        self._check()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """A violated contract as its message and hypothesis's failing example; other errors as pytest shows them."""
        if isinstance(excinfo.value, AssertionError):
            notes = getattr(excinfo.value, "__notes__", [])
            return "\n".join([f"{self.name}: {excinfo.value}", *notes])
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        """Where pytest reports the check: the session's root, and the contract's name."""
        return self.path, None, f"equican contract {self.name}"


class _Contracts(pytest.Collector):
    """The parent of the contract items (they belong to no file)."""

    def collect(self) -> list[pytest.Item]:
        """Nothing: the items are made in ``pytest_collection_modifyitems``."""
        return []


def _law_check(group: Any, law: str) -> Callable[[], None]:
    from .contract import GroupContract

    contract = type("UserGroupContract", (GroupContract,), {"group": group})()
    return lambda: contract._check_law(law)


def _canon_check(group: Any, spec: str, check: str, config: pytest.Config) -> Callable[[], None]:
    def run() -> None:
        import torch
        from hypothesis import HealthCheck, given, settings

        from .canon import assert_canonicalizer_invariant, assert_g_equivariant, assert_round_trip
        from .images import band_limited_images, white_noise_images
        from .strategies import batch_sizes, seeds

        canon = resolve_canonicalizer(spec, group, seed=config.getoption("equican_seed"))
        dtype = next((p.dtype for p in canon.parameters() if p.is_floating_point()), torch.float64)
        tol = group.tolerance(dtype)
        atol = config.getoption("equican_atol")
        crop = config.getoption("equican_crop")
        make = white_noise_images if group.exact else band_limited_images

        @settings(settings(), deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(seed=seeds(), batch=batch_sizes(_MAX_BATCH))
        def property_(seed: int, batch: int) -> None:
            x = make(batch, _CHANNELS, _SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)
            if check == "invariance":
                assert_canonicalizer_invariant(canon, x, atol=tol.action if atol is None else atol, seed=seed,
                                               crop=crop)
            elif check == "g_equivariance":
                assert_g_equivariant(canon, x, atol=tol.element if atol is None else atol, seed=seed)
            else:
                assert_round_trip(canon, x, atol=tol.action if atol is None else atol, crop=crop)

        property_()

    return run


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect, so the contract tests can be selected like any other
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    specs = config.getoption("equican_group")
    if not specs:
        return
    from .laws import LAWS

    parent = _Contracts.from_parent(session, name="equican", nodeid="equican")
    canons = config.getoption("equican_canonicalizer")
    for spec in specs:
        group = _make_group(spec)  # a name that is not registered stops the run here, with the registry's hint
        for law in LAWS:
            items.append(ContractItem.from_parent(parent, name=f"group[{spec}]::{law}", check=_law_check(group, law)))
        for canon in canons:
            for check in _CANON_CHECKS:
                items.append(ContractItem.from_parent(parent, name=f"canonicalizer[{canon}][{spec}]::{check}",
                                                      check=_canon_check(group, canon, check, config)))

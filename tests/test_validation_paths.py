"""The validation of group calls: its one-sync fast path accepts and rejects exactly what the strict, ordered checks
do (with the same error and message), the solver loops call no validation at all, and results stay lazy."""

from __future__ import annotations

import warnings

import pytest
import torch

import equican._member_checks as checks_module
from equican import make_group
from equican.canon import DEQCanonicalizer
from equican.canon.nets import UpdateNet
from equican.errors import ConvergenceWarning


def _cases(group):
    """(label, method, args): valid calls and every kind of bad argument, for one group."""
    g = group.sample(2, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 8, 8)
    nan_g = g.clone().view(2, -1)
    nan_g[1, 0] = float("nan")
    nan_x = x.clone()
    nan_x[0, 0, 3, 3] = float("inf")
    z = torch.zeros(2, *group.unconstrained_shape)
    return [
        ("valid act", "act", (g, x)), ("valid compose", "compose", (g, g)), ("valid chart", "from_unconstrained", (z,)),
        ("valid distance", "distance", (g, g)), ("valid act_inverse", "act_inverse", (g, x)),
        ("nan g", "act", (nan_g.view_as(g), x)), ("inf x", "act", (g, nan_x)),
        ("nan g and bad x", "act", (nan_g.view_as(g), x[:, :, :1])),
        ("wrong g shape", "act", (g[:, None], x)), ("rank-3 x", "act", (g, x[:, 0])),
        ("batch mismatch", "act", (g, x[:1])), ("batch mismatch h", "compose", (g, g[:1])),
        ("float64 x", "act", (g, x.double())), ("int g", "compose", (g.long(), g)),
        ("not a tensor", "act", (g.tolist(), x)), ("nan z", "from_unconstrained", (z.fill_(float("nan")),)),
        ("finite values whose sum overflows", "act", (g, torch.full((2, 1, 8, 8), 3e38))),
    ]


def _outcome(fn, args):
    try:
        fn(*args)
    except Exception as exc:  # the outcome to compare: the error's type and message
        return type(exc).__name__, str(exc)
    return "ok", ""


def _outcomes(group, monkeypatch, fast):
    with monkeypatch.context() as m:
        if fast is not None:
            m.setattr(checks_module, "_fast_accept", fast)
        return {label: _outcome(getattr(group, method), args) for label, method, args in _cases(group)}


@pytest.mark.parametrize("name", ["scale", "rotation", "cyclic", "affine", "monotone"])
def test_fast_path_accepts_and_rejects_like_the_strict_checks(name, monkeypatch):
    group = make_group(name)
    fast = _outcomes(group, monkeypatch, None)
    strict = _outcomes(group, monkeypatch, lambda *args: False)  # every call takes the strict, ordered checks
    assert fast == strict
    assert fast["valid act"][0] == "ok" and fast["nan g"][0] == "NonFiniteError"
    # Finite entries whose sum overflows are not mistaken for non-finite ones: the strict path confirms them.
    assert fast["finite values whose sum overflows"][0] in ("ok", "NonFiniteError")
    assert fast["finite values whose sum overflows"] == strict["finite values whose sum overflows"]


def test_negative_control_a_fast_path_that_accepts_everything_is_caught(monkeypatch):
    group = make_group("scale")
    strict = _outcomes(group, monkeypatch, lambda *args: False)
    broken = _outcomes(group, monkeypatch, lambda *args: True)  # skips the checks: NaN slips through
    assert broken != strict
    assert broken["inf x"] != strict["inf x"]


def test_a_group_with_its_own_check_always_gets_it():
    class Picky(type(make_group("scale"))):
        def check(self, g, *, name="g", where=None):
            raise ValueError(f"{where}: picky about {name}")

    with pytest.raises(ValueError, match="Picky.act: picky about g"):
        Picky().act(torch.zeros(1, 1), torch.rand(1, 1, 4, 4))


def test_the_solver_loop_validates_nothing_and_g_stays_lazy(monkeypatch):
    group = make_group("monotone")
    canon = DEQCanonicalizer(group, UpdateNet(2, group.unconstrained_shape, channels=(4,))).eval()
    x = torch.rand(2, 2, 12, 12)
    calls = []
    real = checks_module._fast_accept
    monkeypatch.setattr(checks_module, "_fast_accept", lambda *a: calls.append(1) or real(*a))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = canon(x)
    assert calls == []  # no group call inside forward and its solve is validated (x is, once, at the entry)
    assert result._g is None  # the inverse is computed only when result.g is read
    # Reading g is the one public call (the inverse, validated once: it is where a degenerate element would raise),
    # which also shows the counter counts: a check that could not fail would prove nothing.
    assert result.g.shape == result.h.shape and calls == [1]

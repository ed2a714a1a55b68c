"""The pytest plugin (``equican.testing.pytest_plugin``, entry point ``pytest11``): a user's tiny suite run by
pytester, in this process, with the plugin loaded as an installed plugin is.

A correct canonicalizer passes the contracts and the fixtures' tests; the negative control, a canonicalizer that
ignores how its input was transformed, fails them. The inner runs load no hypothesis profile of their own, so this
suite's profile (tests/conftest.py) holds there and is unchanged afterwards.
"""

from __future__ import annotations

from importlib.metadata import distributions

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]

USER_CANON = '''
import torch
from equican import Canonicalizer


class HeaviestQuadrant(Canonicalizer):
    """C4: turns each image so that its heaviest quadrant ends up top-left."""

    def solve(self, x):
        hs = self.group.from_unconstrained(torch.eye(4, dtype=x.dtype))
        scores = [self.group.act(h.expand(len(x), 1), x)[..., :16, :16].sum(dim=(1, 2, 3)) for h in hs]
        return torch.stack(scores, dim=1), {}


class IgnoresTheInput(HeaviestQuadrant):
    """Broken: always the same rotation, whatever the input's own."""

    def solve(self, x):
        return torch.eye(4, dtype=x.dtype)[[0] * len(x)], {}


def not_a_canonicalizer(group):
    return "nope"
'''

USER_TESTS = '''
import torch
from equican.testing import assert_canonicalizer_invariant
import {module} as user


def test_fixtures(equican_group, equican_images, equican_seed, make_equican_canonicalizer):
    assert equican_images.shape == (4, 1, 32, 32) and equican_images.dtype == torch.float64
    canon = make_equican_canonicalizer("direct")
    assert canon.group is equican_group and not canon.training
    assert canon(equican_images).x.shape == equican_images.shape


def test_user_canonicalizer(equican_group, equican_images, equican_seed):
    assert_canonicalizer_invariant(user.{canon}(equican_group), equican_images, atol=0, seed=equican_seed)
'''


def _project(pytester: pytest.Pytester, module: str, canon: str) -> None:
    pytester.makepyfile(**{module: USER_CANON, f"test_{module}": USER_TESTS.format(module=module, canon=canon)})
    pytester.makeini("[pytest]\npythonpath = .\n")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_the_plugin_is_an_installed_pytest11_entry_point(pytestconfig):
    # Every distribution, as pytest (pluggy) reads them: a stale equican.egg-info in the working directory may
    # shadow the installed metadata in importlib.metadata.entry_points(), but not in pytest's plugin loading.
    points = {e.value for d in distributions() for e in d.entry_points if e.group == "pytest11" and e.name == "equican"}
    assert points == {"equican.testing.pytest_plugin"}
    assert pytestconfig.pluginmanager.get_plugin("equican").__name__ == "equican.testing.pytest_plugin"
    assert pytestconfig.getoption("equican_group") == []  # this suite runs no contract unless asked


def test_a_correct_canonicalizer_passes_the_contracts_and_the_users_tests(pytester):
    profile = settings.default
    _project(pytester, "good_canon", "HeaviestQuadrant")
    result = _run(pytester, "--equican-group", "cyclic:n=4", "--equican-canonicalizer", "good_canon:HeaviestQuadrant",
                  "-k", "canonicalizer or identity or fixtures or user", "-v")
    result.assert_outcomes(passed=7)  # 2 own tests + the laws identity and act_identity + 3 canonicalizer checks
    result.stdout.fnmatch_lines(["*equican::group?cyclic:n=4?::identity PASSED*",
                                 "*equican::canonicalizer?good_canon:HeaviestQuadrant??cyclic:n=4?::invariance PASSED*",
                                 ])
    assert settings.default is profile  # the plugin loaded no hypothesis profile


def test_negative_control_a_canonicalizer_that_ignores_the_transformation_fails(pytester):
    _project(pytester, "bad_canon", "IgnoresTheInput")
    result = _run(pytester, "--equican-group", "cyclic:n=4", "--equican-canonicalizer", "bad_canon:IgnoresTheInput",
                  "-k", "canonicalizer or user")
    # invariance, equivariance of g and the user's own test fail; the round trip cannot see this bug
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["*canonicalizer?bad_canon:IgnoresTheInput??cyclic:n=4?::invariance*",
                                 "*assert_canonicalizer_invariant: max error * exceeds atol 0*"])


def test_a_registered_kind_runs_through_the_contract(pytester):
    """``--equican-canonicalizer KIND`` builds a registered kind: the escnn canonicalizer on C4 is exactly invariant
    (equivariance of g holds up to float64 rounding)."""
    pytest.importorskip("escnn")
    result = _run(pytester, "--equican-group", "cyclic:n=4", "--equican-canonicalizer", "escnn", "-k",
                  "invariance or round_trip")
    result.assert_outcomes(passed=2)


def test_without_the_option_the_group_fixture_says_what_it_needs(pytester):
    pytester.makepyfile(test_plain="def test_group(equican_group):\n    pass\n")
    result = _run(pytester)
    result.assert_outcomes(errors=1)  # at set-up: the fixture cannot be made
    result.stdout.fnmatch_lines(["*expected a group from --equican-group NAME*got neither*"])


def test_a_fixture_of_the_users_own_overrides_the_group(pytester):
    pytester.makeconftest("import pytest\nfrom equican import make_group\n\n"
                          "@pytest.fixture\ndef equican_group():\n    return make_group('cyclic', n=4)\n")
    pytester.makepyfile(test_own="def test_group(equican_group):\n    assert equican_group.n == 4\n")
    _run(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize("args, message", [
    (["--equican-group", "no_such_group"], "*--equican-group no_such_group:*"),
    (["--equican-group", "cyclic:n"], "*expected NAME[[]:KEY=VALUE,...[]], got 'cyclic:n'*"),
], ids=["unknown-group", "bad-option"])
def test_a_bad_group_option_is_a_usage_error(pytester, args, message):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_callable_that_returns_no_canonicalizer_is_refused(pytester):
    _project(pytester, "odd_canon", "HeaviestQuadrant")
    result = _run(pytester, "--equican-group", "cyclic:n=4", "--equican-canonicalizer",
                  "odd_canon:not_a_canonicalizer", "-k", "round_trip")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected an equican.Canonicalizer, got str*"])


def test_negative_control_a_broken_group_fails_the_group_laws(pytester):
    """A user's group registered by a module the conftest imports; its inverse is wrong for quarter turns. Run in a
    subprocess: the registration must not reach this suite's registry (every later test module would get it)."""
    pytester.makepyfile(my_groups="from equican import make_group\n\n\n"
                                  "class BrokenC4(type(make_group('cyclic', n=4)), name='broken_c4'):\n"
                                  "    def inverse(self, g):\n"
                                  "        return g  # wrong: a quarter turn is not its own inverse\n")
    pytester.makeconftest("import my_groups  # noqa: F401 - registers broken_c4\n")
    pytester.makeini("[pytest]\npythonpath = .\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--equican-group", "broken_c4", "-k",
                                           "inverse or associativity")
    result.assert_outcomes(passed=1, failed=2)  # inverse and inverse_action fail; associativity holds
    result.stdout.fnmatch_lines(["*FAILED equican::group?broken_c4?::inverse *"])

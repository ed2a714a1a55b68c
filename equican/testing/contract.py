"""``GroupContract``: the group laws as a pytest test class to subclass in your own test suite.

For example:

```python
# tests/test_my_group.py
from equican.testing import GroupContract
from mypackage import MyGroup

class TestMyGroup(GroupContract):
    group = MyGroup()
```

pytest then collects one test per law of [`LAWS`][equican.testing.laws.LAWS] (``test_identity``, ``test_inverse``, ...,
``test_gradcheck``); each runs the law for hypothesis-drawn seeds and batch sizes in every dtype of ``dtypes``. The laws
are the very functions [`check_group_laws`][equican.testing.laws.check_group_laws] runs, so a failure message is the
same table of measured errors and tolerances.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..errors import ConfigError
from ..group import Group
from .laws import LAWS, run_law
from .strategies import batch_sizes, seeds

__all__ = ["GroupContract"]


class GroupContract:
    """Base class of a pytest test class that law-tests ``group``; set ``group`` in the subclass.

    Attributes:
        group: the group instance under test (required; all attributes are class attributes of the subclass).
        dtypes: dtypes every law is checked in (the gradcheck always runs in float64, once).
        device: where elements and images live.
        max_batch: hypothesis draws batch sizes ``1 .. max_batch``.
        size: height and width of the law images (the built-in groups' tolerances are measured at 32).
        hypothesis_settings: keyword overrides for hypothesis (e.g. ``{"max_examples": 50}``), applied on top of the
            hypothesis profile loaded when the test runs; ``deadline`` is None by default, since the cost of a
            group's ``inverse`` varies with the machine.
    """

    group: ClassVar[Group | None] = None
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.float64)
    device: ClassVar[str] = "cpu"
    max_batch: ClassVar[int] = 4
    size: ClassVar[int] = 32
    hypothesis_settings: ClassVar[dict[str, Any]] = {}

    def _group(self) -> Group:
        group = type(self).group
        if not isinstance(group, Group):
            raise ConfigError(f"{type(self).__name__}: expected the class attribute group to be an equican.Group "
                              f"instance, got {type(group).__name__}")
        return group

    def _check_law(self, law: str) -> None:
        """Run ``law`` under hypothesis: seeds and batch sizes are drawn, the group samples from the seed."""
        group = self._group()
        dtypes = (torch.float64,) if law == "gradcheck" else self.dtypes
        # The settings are built here, when the test runs, so that they start from the hypothesis profile the user's
        # suite loaded (a settings object made at import time would freeze the profile active then), and the inner
        # function is made per call so that hypothesis never sees one test run by several subclasses.
        options = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], **self.hypothesis_settings}

        @settings(settings(), **options)
        @given(seed=seeds(), data=st.data())
        def check(seed: int, data: st.DataObject) -> None:
            batch = data.draw(batch_sizes(self.max_batch), label="batch")
            for dtype in dtypes:
                run_law(law, group, seed=seed, batch=batch, size=self.size, dtype=dtype,
                        device=self.device).raise_if_failed()

        check()


def _law_test(law: str) -> Any:
    def test(self: GroupContract) -> None:
        self._check_law(law)

    test.__name__ = f"test_{law}"
    test.__qualname__ = f"GroupContract.test_{law}"
    summary = " ".join((LAWS[law].__doc__ or "").split("\n\n")[0].split())
    test.__doc__ = f"The group law {law!r} holds for hypothesis-drawn seeds: {summary}"
    return test


# One test method per law, generated so that a law added to LAWS is tested by every GroupContract subclass.
for _law in LAWS:
    setattr(GroupContract, f"test_{_law}", _law_test(_law))
del _law

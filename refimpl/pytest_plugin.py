"""pytest plugin: the ``refimpl_conform`` fixture, for checking your implementation in your own suite.

    def test_my_fa(refimpl_conform):
        refimpl_conform("fa", my_fa, instances=200)

Registered through the ``pytest11`` entry point when refimpl is installed (or add
``pytest_plugins = ["refimpl.pytest_plugin"]`` to a conftest). The fixture runs
:func:`proofs.conform.check` with the given keyword arguments (``hyper``, ``dtype``, ``rtol``,
``targets``, ``seed``, ...) and fails the test with the counterexample's printout (rule,
hyper-parameters, expected and received values, the slip's name) on a mismatch; it returns the
:class:`proofs.conform.ConformResult`. ``proofs`` (and torch, hypothesis) are imported only when
the fixture is used.
"""

from __future__ import annotations

import pytest

__all__ = ["refimpl_conform"]


@pytest.fixture
def refimpl_conform():
    """``refimpl_conform(rule, impl, instances=100, **kwargs)``: fails the test on a mismatch."""

    def run(rule, impl, instances: int = 100, **kwargs):
        from proofs import conform

        res = conform.check(rule, impl, instances=instances, **kwargs)
        if not res.passed:
            pytest.fail(res.summary(), pytrace=False)
        return res

    return run

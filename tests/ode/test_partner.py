from fractions import Fraction

import pytest

from refimpl.ode import partner as P, tableaux as T


@pytest.mark.parametrize("name", T.NAMES)
def test_partner_satisfies_the_symplectic_condition_exactly(name):
    R = P.symplectic_residual(name)
    tab = T.get(name)
    for i, row in enumerate(R):
        if tab.b[i] == 0:
            assert row is None
        else:
            assert all(v == 0 for v in row)


@pytest.mark.parametrize("name", T.NAMES)
def test_naive_partner_violates_it(name):
    R = P.symplectic_residual(name, P.naive_partner_A(name))
    assert any(v != 0 for row in R if row is not None for v in row)


@pytest.mark.parametrize("name", T.NAMES)
def test_coupling_is_b_minus_A_where_weights_are_nonzero(name):
    p = P.partner(name)
    b = p.tableau.b
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            if b[i] != 0 and b[j] != 0:
                assert p.coupling[i][j] == b[j] - p.A[i][j]
            if b[i] == 0 and b[j] != 0:
                assert p.coupling[i][j] == b[j] * p.tableau.a[j][i]
            if b[j] == 0 and b[i] != 0:
                assert p.coupling[i][j] == p.tableau.a[j][i] / b[i]


def test_dopri5_bar_entry():
    neu, bar = P.partner("dopri5").neu_bar(6)
    assert bar[4][4] == Fraction(384, 175) and neu[0] == [Fraction(1, 9)]

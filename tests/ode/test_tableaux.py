from fractions import Fraction

import pytest

from refimpl.ode import tableaux as T


def _conditions(tab):
    """Order conditions (rooted trees up to order 4) as exact residuals, keyed by order."""
    a, b, c = tab.a, tab.b, tab.c
    s = tab.stages
    ac = [sum(a[i][j] * c[j] for j in range(s)) for i in range(s)]
    ac2 = [sum(a[i][j] * c[j] ** 2 for j in range(s)) for i in range(s)]
    aac = [sum(a[i][j] * ac[j] for j in range(s)) for i in range(s)]
    S = lambda v: sum(b[i] * v[i] for i in range(s))
    return {1: [S([1] * s) - 1],
            2: [S(c) - Fraction(1, 2)],
            3: [S([ci ** 2 for ci in c]) - Fraction(1, 3), S(ac) - Fraction(1, 6)],
            4: [S([ci ** 3 for ci in c]) - Fraction(1, 4), S([c[i] * ac[i] for i in range(s)]) - Fraction(1, 8),
                S(ac2) - Fraction(1, 12), S(aac) - Fraction(1, 24)]}


@pytest.mark.parametrize("name", T.NAMES)
def test_order_conditions_hold_up_to_the_stated_order(name):
    tab = T.get(name)
    cond = _conditions(tab)
    tol = Fraction(1, 10**15) if tab.approximate else 0
    for q in range(1, min(tab.order, 4) + 1):
        assert all(abs(r) <= tol for r in cond[q]), (name, q, cond[q])
    if tab.order < 4:  # and fail at the next order: the stated order is sharp
        assert any(r != 0 for r in cond[tab.order + 1]), name


@pytest.mark.parametrize("name", T.ADAPTIVE)
def test_embedded_weights_have_their_order(name):
    tab = T.get(name)
    emb = T.Tableau("emb", tab.a, tab.b_err, tab.c, 1, approximate=tab.approximate)
    cond = _conditions(emb)
    tol = Fraction(1, 10**15) if tab.approximate else 0
    for q in range(1, min(tab.err_order, 4) + 1):
        assert all(abs(r) <= tol for r in cond[q]), (name, q)


def test_live_stages_and_fsal():
    assert T.get("dopri5").live == (0, 1, 2, 3, 4, 5) and T.get("dopri5").fsal
    assert T.get("bosh3").effective_stages == 3 and T.get("bosh3").fsal
    assert T.get("midpoint").live == (0, 1) and not T.get("midpoint").fsal
    assert T.get("dopri8").stages == 13 and T.get("dopri8").effective_stages == 13
    assert T.get("adaptive_heun").name == "heun"


def test_validation_errors():
    with pytest.raises(ValueError, match="strictly lower-triangular"):
        T.Tableau("bad", ((0, 1), (0, 0)), (Fraction(1, 2), Fraction(1, 2)), (1, 0), 1)
    with pytest.raises(ValueError, match="c\\[1\\]"):
        T.Tableau("bad", ((0, 0), (1, 0)), (Fraction(1, 2), Fraction(1, 2)), (0, Fraction(1, 2)), 1)
    with pytest.raises(ValueError, match="sum 1"):
        T.Tableau("bad", ((0,),), (2,), (0,), 1)
    with pytest.raises(TypeError, match="float"):
        T.Tableau("bad", ((0,),), (1.0,), (0,), 1)
    with pytest.raises(ValueError, match="unknown Runge-Kutta method"):
        T.get("rk5")
    with pytest.raises(TypeError):
        T.get(3)

"""Butcher tableaux of explicit Runge-Kutta methods, as exact rationals.

An explicit ``s``-stage method ``(a, b, c)`` advances ``dx/dt = f(x, t)`` by one step ``h``:

    X_i = x_n + h sum_{j<i} a_ij k_j,     k_i = f(X_i, t_n + c_i h),     x_{n+1} = x_n + h sum_i b_i k_i

(Hairer, Norsett & Wanner, *Solving ODEs I*, §II.1). Embedded pairs carry a second weight vector
``b_err`` (the lower-order solution); the local error estimate is ``h sum_i (b_i - b_err_i) k_i``.

Every entry is a :class:`fractions.Fraction`, so conditions on the coefficients (row sums, order
conditions, the symplectic condition of :mod:`refimpl.ode.partner`) are checked exactly.
:meth:`Tableau.as_floats` converts once for computation (Python floats: they never upcast float32).

Provided (``get(name)``): ``euler``, ``midpoint``, ``heun`` (alias ``adaptive_heun``; embedded
Euler), ``rk4``, ``rk38``, ``bosh3``, ``fehlberg2``, ``dopri5``, ``dopri8``.

``dopri8`` (Prince & Dormand 1981, RK8(7)13M) is published as ratios of integers that
*approximate* irrational coefficients: its row sums ``sum_j a_ij`` differ from ``c_i`` by up to
1e-17 and ``sum_i b_i - 1 = -3.7e-18``. It is marked ``approximate=True``; those consistency
conditions are then checked to 1e-15 instead of exactly. The symplectic partner is built from
``a`` and ``b`` alone, so it is exact for dopri8 too.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

__all__ = ["Tableau", "get", "NAMES", "FIXED", "ADAPTIVE"]


def _fr(v) -> Fraction:
    if isinstance(v, Fraction):
        return v
    if isinstance(v, float):
        raise TypeError(f"tableau entries must be exact (int, Fraction or 'p/q' string), got float {v!r}")
    return Fraction(v)


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method with exact rational coefficients.

    Arguments:
        name: method name.
        a: ``s x s`` strictly lower-triangular matrix (rows of Fractions).
        b: ``s`` weights of the propagated solution.
        c: ``s`` nodes, ``c_i = sum_j a_ij``.
        order: classical order ``p`` of ``(a, b, c)``.
        b_err: weights of the embedded solution (None for fixed-step-only methods).
        err_order: order of the embedded solution.
        approximate: coefficients are published rational approximations (see module docstring).
    """

    name: str
    a: tuple
    b: tuple
    c: tuple
    order: int
    b_err: Optional[tuple] = None
    err_order: Optional[int] = None
    approximate: bool = False

    def __post_init__(self):
        a = tuple(tuple(_fr(v) for v in row) for row in self.a)
        b = tuple(_fr(v) for v in self.b)
        c = tuple(_fr(v) for v in self.c)
        s = len(b)
        if s == 0:
            raise ValueError(f"{self.name}: b: expected at least one stage")
        if len(a) != s or any(len(row) != s for row in a):
            raise ValueError(f"{self.name}: a: expected an {s}x{s} matrix (s = len(b)), got rows of lengths "
                             f"{[len(r) for r in a]}")
        if len(c) != s:
            raise ValueError(f"{self.name}: c: expected {s} nodes, got {len(c)}")
        for i in range(s):
            for j in range(i, s):
                if a[i][j] != 0:
                    raise ValueError(f"{self.name}: a[{i}][{j}] = {a[i][j]}: an explicit method needs a "
                                     "strictly lower-triangular a")
        tol = Fraction(1, 10**15) if self.approximate else Fraction(0)
        for i in range(s):
            if abs(sum(a[i]) - c[i]) > tol:
                raise ValueError(f"{self.name}: c[{i}] = {c[i]} but sum_j a[{i}][j] = {sum(a[i])}")
        if abs(sum(b) - 1) > tol:
            raise ValueError(f"{self.name}: b: expected sum 1 (consistency), got {sum(b)}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)
        if self.b_err is not None:
            be = tuple(_fr(v) for v in self.b_err)
            if len(be) != s:
                raise ValueError(f"{self.name}: b_err: expected {s} weights, got {len(be)}")
            if abs(sum(be) - 1) > tol:
                raise ValueError(f"{self.name}: b_err: expected sum 1, got {sum(be)}")
            object.__setattr__(self, "b_err", be)
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"{self.name}: order: expected a positive int, got {self.order!r}")

    @property
    def stages(self) -> int:
        """Number of stages ``s``."""
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        """True when an embedded solution is available (step-size control)."""
        return self.b_err is not None

    @property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage is evaluated at the new solution (``a_s = b``, ``b_s = 0``)."""
        return self.stages > 1 and self.b[-1] == 0 and self.a[-1][:-1] == self.b[:-1]

    @property
    def live(self) -> tuple:
        """Stages (0-based) on which ``x_{n+1}`` depends: ``b_i != 0``, or read by a later live stage.

        The others (the FSAL stage of bosh3, dopri5) are needed only for the error estimate; solvers
        skip them on a fixed grid and every gradient method ignores them.
        """
        s = self.stages
        live = [False] * s
        for i in reversed(range(s)):
            live[i] = self.b[i] != 0 or any(live[j] and self.a[j][i] != 0 for j in range(i + 1, s))
        return tuple(i for i in range(s) if live[i])

    @property
    def effective_stages(self) -> int:
        """``s_eff = len(live)``: stages that carry the solution (memory model of spec P-C5)."""
        return len(self.live)

    def as_floats(self) -> dict:
        """``{"a", "b", "c", "b_err"}`` as Python floats (computation; exact data stays here)."""
        return {"a": tuple(tuple(float(v) for v in row) for row in self.a),
                "b": tuple(float(v) for v in self.b),
                "c": tuple(float(v) for v in self.c),
                "b_err": None if self.b_err is None else tuple(float(v) for v in self.b_err)}


def _lower(rows: Sequence[Sequence], s: int) -> tuple:
    """Pad the given rows (row i has i entries) to an s x s strictly lower-triangular matrix."""
    out = []
    for i in range(s):
        r = list(rows[i - 1]) if i > 0 else []
        if len(r) != i:
            raise ValueError(f"row {i}: expected {i} entries, got {len(r)}")
        out.append(tuple(r) + (0,) * (s - i))
    return tuple(out)


def _make(name, rows, b, c, order, b_err=None, err_order=None, approximate=False) -> Tableau:
    return Tableau(name, _lower(rows, len(b)), tuple(b), tuple(c), order, b_err, err_order, approximate)


F = Fraction


def _euler():
    return _make("euler", [], [1], [0], 1)


def _midpoint():
    return _make("midpoint", [[F(1, 2)]], [0, 1], [0, F(1, 2)], 2)


def _heun():
    # Heun's (trapezoidal) method, order 2, with embedded explicit Euler (order 1).
    return _make("heun", [[1]], [F(1, 2), F(1, 2)], [0, 1], 2, b_err=[1, 0], err_order=1)


def _rk4():
    return _make("rk4", [[F(1, 2)], [0, F(1, 2)], [0, 0, 1]],
                 [F(1, 6), F(1, 3), F(1, 3), F(1, 6)], [0, F(1, 2), F(1, 2), 1], 4)


def _rk38():
    # Kutta's 3/8 rule (Hairer-Norsett-Wanner I, Table II.1.2).
    return _make("rk38", [[F(1, 3)], [F(-1, 3), 1], [1, -1, 1]],
                 [F(1, 8), F(3, 8), F(3, 8), F(1, 8)], [0, F(1, 3), F(2, 3), 1], 4)


def _bosh3():
    # Bogacki & Shampine (1989), 3(2) pair, FSAL.
    return _make("bosh3", [[F(1, 2)], [0, F(3, 4)], [F(2, 9), F(1, 3), F(4, 9)]],
                 [F(2, 9), F(1, 3), F(4, 9), 0], [0, F(1, 2), F(3, 4), 1], 3,
                 b_err=[F(7, 24), F(1, 4), F(1, 3), F(1, 8)], err_order=2)


def _fehlberg2():
    # Fehlberg's RK1(2) pair as in torchdiffeq's ``fehlberg2``: the propagated solution is second order.
    return _make("fehlberg2", [[F(1, 2)], [F(1, 256), F(255, 256)]],
                 [F(1, 512), F(255, 256), F(1, 512)], [0, F(1, 2), 1], 2,
                 b_err=[F(1, 256), F(255, 256), 0], err_order=1)


def _dopri5():
    # Dormand & Prince (1980), RK5(4)7M, FSAL; embedded 4th-order weights of the original pair.
    rows = [[F(1, 5)],
            [F(3, 40), F(9, 40)],
            [F(44, 45), F(-56, 15), F(32, 9)],
            [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
            [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
            [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)]]
    b = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
    b_err = [F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)]
    return _make("dopri5", rows, b, [0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1], 5, b_err=b_err, err_order=4)


def _dopri8():
    # Prince & Dormand (1981), RK8(7)13M: the published rational approximations (13 stages; the
    # 14th FSAL stage that some codes add for dense output is not part of the method).
    Q = lambda s: F(s)
    c = ["0", "1/18", "1/12", "1/8", "5/16", "3/8", "59/400", "93/200", "5490023248/9719169821", "13/20",
         "1201146811/1299019798", "1", "1"]
    rows = [
        ["1/18"],
        ["1/48", "1/16"],
        ["1/32", "0", "3/32"],
        ["5/16", "0", "-75/64", "75/64"],
        ["3/80", "0", "0", "3/16", "3/20"],
        ["29443841/614563906", "0", "0", "77736538/692538347", "-28693883/1125000000", "23124283/1800000000"],
        ["16016141/946692911", "0", "0", "61564180/158732637", "22789713/633445777", "545815736/2771057229",
         "-180193667/1043307555"],
        ["39632708/573591083", "0", "0", "-433636366/683701615", "-421739975/2616292301", "100302831/723423059",
         "790204164/839813087", "800635310/3783071287"],
        ["246121993/1340847787", "0", "0", "-37695042795/15268766246", "-309121744/1061227803",
         "-12992083/490766935", "6005943493/2108947869", "393006217/1396673457", "123872331/1001029789"],
        ["-1028468189/846180014", "0", "0", "8478235783/508512852", "1311729495/1432422823",
         "-10304129995/1701304382", "-48777925059/3047939560", "15336726248/1032824649",
         "-45442868181/3398467696", "3065993473/597172653"],
        ["185892177/718116043", "0", "0", "-3185094517/667107341", "-477755414/1098053517",
         "-703635378/230739211", "5731566787/1027545527", "5232866602/850066563", "-4093664535/808688257",
         "3962137247/1805957418", "65686358/487910083"],
        ["403863854/491063109", "0", "0", "-5068492393/434740067", "-411421997/543043805", "652783627/914296604",
         "11173962825/925320556", "-13158990841/6184727034", "3936647629/1978049680", "-160528059/685178525",
         "248638103/1413531060", "0"],
    ]
    b = ["14005451/335480064", "0", "0", "0", "0", "-59238493/1068277825", "181606767/758867731",
         "561292985/797845732", "-1041891430/1371343529", "760417239/1151165299", "118820643/751138087",
         "-528747749/2220607170", "1/4"]
    b_err = ["13451932/455176623", "0", "0", "0", "0", "-808719846/976000145", "1757004468/5645159321",
             "656045339/265891186", "-3867574721/1518517206", "465885868/322736535", "53011238/667516719",
             "2/45", "0"]
    return _make("dopri8", [[Q(v) for v in r] for r in rows], [Q(v) for v in b], [Q(v) for v in c], 8,
                 b_err=[Q(v) for v in b_err], err_order=7, approximate=True)


_BUILDERS = {"euler": _euler, "midpoint": _midpoint, "heun": _heun, "rk4": _rk4, "rk38": _rk38,
             "bosh3": _bosh3, "fehlberg2": _fehlberg2, "dopri5": _dopri5, "dopri8": _dopri8}
_ALIASES = {"adaptive_heun": "heun"}

#: Every tableau name (aliases excluded).
NAMES = tuple(_BUILDERS)
#: Methods without an embedded pair (fixed steps only).
FIXED = ("euler", "midpoint", "rk4", "rk38")
#: Methods with an embedded pair (adaptive steps, or fixed steps if ``steps`` is given).
ADAPTIVE = ("heun", "bosh3", "fehlberg2", "dopri5", "dopri8")


def get(method) -> Tableau:
    """The :class:`Tableau` called ``method`` (or a Tableau, returned as is)."""
    if isinstance(method, Tableau):
        return method
    if not isinstance(method, str):
        raise TypeError(f"method: expected a method name or a Tableau, got {type(method).__name__}")
    name = _ALIASES.get(method, method)
    if name not in _BUILDERS:
        raise ValueError(f"method: unknown Runge-Kutta method {method!r}; expected one of "
                         f"{NAMES + tuple(_ALIASES)}")
    return _BUILDERS[name]()

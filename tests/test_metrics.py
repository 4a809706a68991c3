import math

import numpy as np
import pytest

from refimpl import metrics


def test_angles():
    a = np.array([[1.0, 0.0]])
    assert metrics.angle(a, a) == 0.0
    assert abs(metrics.angle(a, np.array([[0.0, 2.0]])) - 90.0) < 1e-12
    assert abs(metrics.angle(a, -a) - 180.0) < 1e-12
    assert math.isnan(metrics.angle(a, np.zeros((1, 2))))
    assert metrics.layer_angles((a, a), (a, -a)) == (0.0, 180.0)


def test_norm_ratio_and_errors():
    assert metrics.norm_ratio(2 * np.ones(3), np.ones(3)) == 2.0
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.angle(np.ones(2), np.ones(3))


def test_backends(backend):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])
    assert abs(metrics.angle(backend(a), backend(b)) - metrics.angle(a, b)) < 1e-12

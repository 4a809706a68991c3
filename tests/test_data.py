"""refimpl.data: shapes, splits, scaling, backends, RNG isolation, the IDX reader."""

from __future__ import annotations

import random

import numpy as np
import pytest

from refimpl import data as D
from refimpl.backend import to_numpy


# --- digits ------------------------------------------------------------------------------------

def test_digits_shapes_scaling_and_stratified_split():
    pytest.importorskip("sklearn")
    d = D.digits(seed=0)
    assert (d.n_train, d.n_test, d.n_inputs, d.n_classes, d.n_outputs) == (1437, 360, 64, 10, 10)
    assert d.task == "classification" and d.name == "digits"
    x = np.concatenate([to_numpy(d.x_train), to_numpy(d.x_test)])
    assert x.min() == 0.0 and x.max() == 1.0 and x.dtype == np.float64
    # scaled by /16 exactly: every value times 16 is an integer 0..16
    assert np.array_equal(x * 16, np.round(x * 16))
    yt = to_numpy(d.y_test)
    assert yt.dtype == np.int64 and yt.ndim == 1
    counts = np.bincount(yt, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~10% of 1797 per class
    # the split is a partition of the 1797 samples
    from sklearn.datasets import load_digits

    full = load_digits().data / 16.0
    assert x.shape == full.shape
    assert np.array_equal(np.sort(x.view([("", x.dtype)] * 64), axis=0),
                          np.sort(full.view([("", full.dtype)] * 64), axis=0))


def test_digits_split_is_seeded():
    pytest.importorskip("sklearn")
    a, b, c = D.digits(seed=0), D.digits(seed=0), D.digits(seed=1)
    assert np.array_equal(to_numpy(a.x_test), to_numpy(b.x_test))
    assert not np.array_equal(to_numpy(a.x_test), to_numpy(c.x_test))
    assert D.digits(seed=0, test_size=500).n_test == 500


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch"])
def test_digits_on_backends_and_dtypes(xp_name):
    pytest.importorskip("sklearn")
    if xp_name == "torch":
        pytest.importorskip("torch")
    if xp_name == "array_api_strict":
        pytest.importorskip("array_api_strict")
    d = D.digits(xp=xp_name, dtype="float32")
    xp = d.xp
    assert d.x_train.dtype == xp.float32 and xp.isdtype(d.y_train.dtype, "integral")
    ref = D.digits()
    np.testing.assert_allclose(to_numpy(d.x_test), to_numpy(ref.x_test), rtol=1e-7)
    assert np.array_equal(to_numpy(d.y_test), to_numpy(ref.y_test))
    back = d.to("numpy", "float64")
    assert back.x_train.dtype == np.float64


# --- mnist1d -----------------------------------------------------------------------------------

def test_mnist1d_isolates_global_rng_and_is_deterministic():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(456)
    np_before = np.random.get_state()
    py_before = random.getstate()
    a = D.mnist1d(num_samples=200)
    np_after = np.random.get_state()
    assert np.array_equal(np_before[1], np_after[1]) and np_before[2:] == np_after[2:]
    assert random.getstate() == py_before
    assert (a.n_train, a.n_test, a.n_inputs, a.n_classes) == (160, 40, 40, 10)
    b = D.mnist1d(num_samples=200)
    assert np.array_equal(to_numpy(a.x_train), to_numpy(b.x_train))
    c = D.mnist1d(num_samples=200, seed=7)
    assert not np.array_equal(to_numpy(a.x_train), to_numpy(c.x_train))
    assert set(np.unique(to_numpy(a.y_train))) <= set(range(10))


def test_mnist1d_rejects_unknown_generator_argument():
    pytest.importorskip("mnist1d")
    with pytest.raises(ValueError, match="not an mnist1d generator argument"):
        D.mnist1d(num_samples=100, not_an_arg=3)


# --- teacher-student ---------------------------------------------------------------------------

def test_teacher_regression_matches_its_teacher():
    import refimpl as ri

    d = D.teacher_student(sizes=(5, 7, 3), activation="tanh", n_train=50, n_test=20, seed=3)
    assert (d.n_train, d.n_test, d.n_inputs, d.n_outputs, d.task) == (50, 20, 5, 3, "regression")
    d2 = D.teacher_student(sizes=(5, 7, 3), activation="tanh", n_train=50, n_test=20, seed=3)
    assert np.array_equal(to_numpy(d.y_train), to_numpy(d2.y_train))
    d3 = D.teacher_student(sizes=(5, 7, 3), activation="tanh", n_train=50, n_test=20, seed=4)
    assert not np.array_equal(to_numpy(d.y_train), to_numpy(d3.y_train))
    # a student with the teacher's architecture can represent the targets exactly: the targets are a
    # smooth function of x (tanh hidden layer), not noise; noise=0 gives a deterministic map.
    assert np.all(np.abs(to_numpy(d.y_train)) < 10)
    noisy = D.teacher_student(sizes=(5, 7, 3), n_train=50, n_test=20, seed=3, noise=0.1)
    diff = to_numpy(noisy.y_train) - to_numpy(d.y_train)
    assert 0.05 < diff.std() < 0.2
    assert np.array_equal(to_numpy(noisy.x_train), to_numpy(d.x_train))


def test_linear_teacher_is_linear():
    d = D.teacher_student(sizes=(4, 6, 2), activation="linear", n_train=40, n_test=10, seed=0)
    x, y = to_numpy(d.x_train), to_numpy(d.y_train)
    A = np.hstack([x, np.ones((40, 1))])
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    np.testing.assert_allclose(A @ coef, y, atol=1e-10)


def test_teacher_classification_labels():
    d = D.teacher_student(sizes=(6, 8, 4), task="classification", n_train=300, n_test=100, seed=1,
                          xp="numpy", dtype="float32")
    y = to_numpy(d.y_train)
    assert d.n_classes == 4 and y.dtype == np.int64 and y.min() >= 0 and y.max() <= 3
    assert len(np.unique(y)) >= 2
    assert d.x_train.dtype == np.float32


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "relu"}, "activation"),
    ({"task": "ranking"}, "task"),
    ({"n_train": 0}, "n_train"),
    ({"noise": -1.0}, "noise"),
    ({"sizes": (3,)}, "sizes"),
])
def test_teacher_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.teacher_student(**kwargs)


# --- targets -----------------------------------------------------------------------------------

def test_one_hot_and_targets():
    d = D.teacher_student(sizes=(3, 4), task="classification", n_train=20, n_test=5, seed=0)
    oh = to_numpy(D.targets(d, "mse", "train"))
    assert oh.shape == (20, 4) and np.array_equal(oh.argmax(1), to_numpy(d.y_train))
    assert np.array_equal(oh.sum(1), np.ones(20))
    assert D.targets(d, "ce", "test") is d.y_test
    r = D.teacher_student(sizes=(3, 2), n_train=10, n_test=5)
    with pytest.raises(ValueError, match="classification"):
        D.targets(r, "ce")
    with pytest.raises(ValueError, match="split"):
        D.targets(r, "mse", "valid")
    with pytest.raises(ValueError, match="integer labels"):
        D.one_hot(r.y_train, 3)


def test_dataset_validation():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="y_train"):
        D.Dataset(x, np.array([0, 1, 2]), x, np.array([0, 1, 0, 1]), 2, "classification", "t")
    with pytest.raises(ValueError, match="labels must lie"):
        D.Dataset(x, np.array([0, 1, 2, 0]), x, np.array([0, 1, 0, 1]), 2, "classification", "t")
    with pytest.raises(ValueError, match="task"):
        D.Dataset(x, x, x, x, 0, "other", "t")


def test_load_by_name():
    assert D.load("teacher", sizes=(3, 2), n_train=10, n_test=5).n_train == 10
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        D.load("cifar")


# --- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) % 7).astype(dtype).reshape(2, 3, 4)
    p = tmp_path / ("a.idx" + (".gz" if gz else ""))
    D.write_idx(p, a)
    b = D.read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 4) and np.array_equal(a, b)


def test_idx_header_by_hand(tmp_path):
    """The IDX layout written byte by byte (as on LeCun's MNIST page), independent of write_idx."""
    p = tmp_path / "labels-idx1-ubyte"
    p.write_bytes(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    assert np.array_equal(D.read_idx(p), np.array([7, 0, 9], dtype=np.uint8))
    q = tmp_path / "i16"
    q.write_bytes(bytes([0, 0, 0x0B, 2]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
                  + (-2).to_bytes(2, "big", signed=True) + (300).to_bytes(2, "big", signed=True))
    assert D.read_idx(q).tolist() == [[-2, 300]]


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(bad)
    code = tmp_path / "code"
    code.write_bytes(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        D.read_idx(code)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00\x01")
    with pytest.raises(ValueError, match="data bytes"):
        D.read_idx(short)


def test_idx_dataset_from_directory(tmp_path):
    gen = np.random.default_rng(0)
    tr_x = gen.integers(0, 256, size=(12, 3, 3), dtype=np.uint8)
    te_x = gen.integers(0, 256, size=(5, 3, 3), dtype=np.uint8)
    tr_y = np.array([0, 1, 2] * 4, dtype=np.uint8)
    te_y = np.array([2, 1, 0, 1, 2], dtype=np.uint8)
    D.write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr_x)
    D.write_idx(tmp_path / "train-labels-idx1-ubyte", tr_y)
    D.write_idx(tmp_path / "t10k-images-idx3-ubyte", te_x)
    D.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", te_y)
    d = D.idx(tmp_path)
    assert (d.n_train, d.n_test, d.n_inputs, d.n_classes) == (12, 5, 9, 3)
    np.testing.assert_array_equal(to_numpy(d.x_train), tr_x.reshape(12, 9) / 255.0)
    assert np.array_equal(to_numpy(d.y_test), te_y.astype(np.int64))
    d2 = D.load("idx", path=tmp_path, dtype="float32")
    assert d2.x_train.dtype == np.float32
    with pytest.raises(FileNotFoundError, match="t10k"):
        (tmp_path / "t10k-images-idx3-ubyte").unlink()
        D.idx(tmp_path)


# --- image-shaped data -------------------------------------------------------------------------

def test_digits_images_are_the_flat_digits_reshaped():
    pytest.importorskip("sklearn")
    flat, img = D.digits(seed=0), D.digits(seed=0, images=True)
    assert img.input_shape == (1, 8, 8) and img.is_images and img.n_inputs == 64 and img.name == "digits-images"
    assert flat.input_shape == (64,) and not flat.is_images
    assert to_numpy(img.x_train).shape == (1437, 1, 8, 8)
    # same numbers and split, row-major pixels: the image of a sample is its 64 values as an 8x8 grid
    assert np.array_equal(to_numpy(img.x_train).reshape(1437, 64), to_numpy(flat.x_train))
    assert np.array_equal(to_numpy(img.y_test), to_numpy(flat.y_test))
    from sklearn.datasets import load_digits

    d = load_digits()  # sklearn's own images array is (N, 8, 8): the layout we claim
    assert np.array_equal(d.images.reshape(-1, 64), d.data)
    assert np.array_equal(to_numpy(img.flat().x_test), to_numpy(flat.x_test))
    assert np.array_equal(to_numpy(flat.images((1, 8, 8)).x_test), to_numpy(img.x_test))
    with pytest.raises(ValueError, match="shape"):
        flat.images((1, 8, 7))
    with pytest.raises(TypeError, match="images"):
        D.digits(images=1)
    assert "1x8x8 images" in img.describe()
    s = img.to("array_api_strict", "float32") if _has("array_api_strict") else img
    assert s.input_shape == (1, 8, 8)


def _has(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_dataset_accepts_images_and_checks_their_shape():
    x = np.zeros((4, 1, 2, 2))
    y = np.array([0, 1, 0, 1])
    d = D.Dataset(x, y, x[:2], y[:2], 2, "classification", "t")
    assert d.input_shape == (1, 2, 2) and d.n_inputs == 4
    with pytest.raises(ValueError, match="per-sample shape"):
        D.Dataset(x, y, np.zeros((2, 1, 2, 3)), y[:2], 2, "classification", "t")
    with pytest.raises(ValueError, match="4-d image batch"):
        D.Dataset(np.zeros((4, 2, 2)), y, np.zeros((2, 2, 2)), y[:2], 2, "classification", "t")


def test_teacher_images_shape_labels_and_seeding():
    sh = (2, 12, 12)  # small images keep the test fast; the default (3, 32, 32) is tested below
    d, teacher = D.teacher_images(n_train=300, n_test=100, seed=3, shape=sh, return_teacher=True)
    assert d.input_shape == sh and d.n_classes == 10 and d.x_train.dtype == np.float32
    assert teacher.input_shape == sh and not teacher.is_dense
    # labels are the argmax of the (calibrated) teacher on the very images (float64 teacher)
    x = to_numpy(D.teacher_images(n_train=300, n_test=100, seed=3, shape=sh, dtype="float64").x_train)
    assert np.array_equal(np.argmax(to_numpy(teacher(x)), axis=1), to_numpy(d.y_train))
    # seeded; sample i depends on (seed, split, i) only: more training images only append, test unchanged
    d2 = D.teacher_images(n_train=2100, n_test=50, seed=3, shape=sh)  # crosses a 2048-image chunk boundary
    assert np.array_equal(to_numpy(d2.x_train)[:300], to_numpy(d.x_train))
    assert np.array_equal(to_numpy(d2.y_train)[:300], to_numpy(d.y_train))
    assert np.array_equal(to_numpy(d2.x_test), to_numpy(d.x_test)[:50])
    assert not np.array_equal(to_numpy(d.x_train)[:100], to_numpy(d.x_test))   # separate streams
    d3 = D.teacher_images(n_train=300, n_test=100, seed=4, shape=sh)
    assert not np.array_equal(to_numpy(d3.x_train), to_numpy(d.x_train))


def test_teacher_images_pixels_have_unit_variance_and_smoothing_correlates_neighbours():
    for smooth in (0.0, 1.0, 2.0):
        x = to_numpy(D.teacher_images(n_train=2048, n_test=10, smooth=smooth, shape=(2, 16, 16), seed=1,
                                      dtype="float64").x_train)
        # 2048*512 unit-variance draws (correlated within an image for smooth > 0): var within a few %
        assert abs(x.var() - 1.0) < 0.05 and abs(x.mean()) < 0.05
        r = np.mean(x[:, :, :, 1:] * x[:, :, :, :-1])  # neighbour correlation
        # Gaussian blur of width s: correlation exp(-1 / (4 s^2)) between neighbours (0 for white noise)
        expect = 0.0 if smooth == 0 else np.exp(-1.0 / (4 * smooth ** 2))
        assert abs(r - expect) < 0.03, (smooth, r, expect)


def test_teacher_images_classes_are_balanced():
    d = D.teacher_images(n_train=4000, n_test=10, seed=0)
    assert d.input_shape == (3, 32, 32) and d.x_train.dtype == np.float32 and d.n_classes == 10
    share = np.bincount(to_numpy(d.y_train), minlength=10) / d.n_train
    # measured 8.8%..10.9% for seeds 0-3 on 20,000-50,000 images; 4000 draws add ~0.5% sampling noise
    assert share.min() > 0.08 and share.max() < 0.12


def test_teacher_images_labels_are_a_function_of_the_images():
    """A linear read-out of the pixels (least squares on one-hot labels) is far above chance on
    held-out images; control: the same fit on shuffled labels stays at chance (10%). Small images
    (3x8x8) keep the fit cheap; measured 0.60 vs 0.10."""
    d = D.teacher_images(n_train=4000, n_test=10, shape=(3, 8, 8), seed=0, dtype="float64")
    x = to_numpy(d.x_train).reshape(d.n_train, -1)
    y = to_numpy(d.y_train)
    A = np.hstack([x, np.ones((d.n_train, 1))])
    tr, te = slice(0, 3000), slice(3000, 4000)

    def acc(yy):
        coef = np.linalg.lstsq(A[tr], np.eye(10)[yy][tr], rcond=None)[0]
        return np.mean(np.argmax(A[te] @ coef, axis=1) == yy[te])

    assert acc(y) > 0.4
    assert acc(np.random.default_rng(0).permutation(y)) < 0.15


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (3, 32)}, "shape"),
    ({"smooth": -1.0}, "smooth"),
    ({"n_classes": 1}, "n_classes"),
    ({"n_train": 0}, "n_train"),
    ({"teacher": 3}, "teacher"),
])
def test_teacher_images_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        D.teacher_images(**kwargs)


def test_load_images_by_name():
    d = D.load("teacher-images", n_train=20, n_test=10, shape=(1, 8, 8), dtype="float32")
    assert d.input_shape == (1, 8, 8)
    pytest.importorskip("sklearn")
    assert D.load("digits", images=True).input_shape == (1, 8, 8)

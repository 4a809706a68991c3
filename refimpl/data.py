"""Offline datasets for the training loop: digits, mnist1d, teacher-student, and IDX files.

Nothing here downloads anything (ENGINEERING.md §5):

* :func:`digits`: scikit-learn's bundled ``load_digits`` (1797 8x8 images, 64 inputs with integer
  values 0..16 scaled to [0, 1] by ``/16``, 10 classes); a stratified train/test split drawn from
  ``seed`` (default 1437 / 360). ``images=True`` keeps them as ``(1, 8, 8)`` images (NCHW) for
  convolutional networks.
* :func:`mnist1d`: the procedurally generated MNIST-1D (Greydanus 2020) from
  ``mnist1d.data.make_dataset`` (never its download path). That generator seeds the *global*
  ``random`` and ``np.random`` generators; the caller's states are saved and restored around it.
* :func:`teacher_student`: inputs ``x ~ N(0, I)`` labelled by a random teacher
  :class:`~refimpl.network.Network` (``linear`` or ``tanh`` hidden layers) drawn from ``seed``:
  regression targets ``y = teacher(x) (+ noise)`` or classes ``argmax teacher(x)``.
* :func:`teacher_images`: images at CIFAR's shape ``(3, 32, 32)`` (any shape), Gaussian or
  spatially smoothed Gaussian noise, labelled by a random convolutional teacher network whose
  output offsets are calibrated so that the classes are roughly balanced; generated in chunks,
  seeded, nothing downloaded (a stand-in for CIFAR-10 in scale runs, not a substitute for its
  statistics).
* :func:`read_idx` / :func:`idx`: the IDX format of the original MNIST files, for users who have
  them on disk (``train-images-idx3-ubyte[.gz]`` etc.).

Every loader returns a :class:`Dataset` (a frozen dataclass) whose arrays live on the requested
backend ``xp`` and floating ``dtype``. Classification labels are integer arrays of shape ``(N,)``
(the ``ce`` loss takes them as they are); :func:`one_hot` / :func:`targets` give the one-hot
float targets that an ``mse``-trained classifier needs.

Data preparation happens on the host with NumPy (it is I/O and random draws, not array math of
the reference); the result is moved with :func:`refimpl.backend.from_numpy`.
"""

from __future__ import annotations

import gzip
import math
import os
import random as _pyrandom
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .backend import (from_numpy, namespace, resolve_namespace, resolve_dtype, rng as _rng, to_numpy,
                      device_of)

__all__ = ["Dataset", "digits", "mnist1d", "teacher_student", "teacher_images", "read_idx", "write_idx", "idx", "load",
           "one_hot", "targets", "DATASETS"]

#: Names accepted by :func:`load` (and ``refimpl train --data``).
DATASETS = ("digits", "mnist1d", "teacher", "teacher-images", "idx")

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Dataset:
    """A train/test split on one backend.

    Attributes:
        x_train: ``(N_train, n_0)`` floating inputs, or ``(N_train, C, H, W)`` images (NCHW, for
            convolutional networks); ``x_test``: ``(N_test, ...)`` of the same per-sample shape.
        y_train, y_test: integer labels ``(N,)`` in ``[0, n_classes)`` for classification; floating
            targets ``(N, n_out)`` for regression.
        n_classes: number of classes (0 for regression).
        task: ``"classification"`` or ``"regression"``.
        name: a short description (``"digits"``, ``"mnist1d"``, ``"teacher(tanh, [20, 30, 5])"``...).
    """

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    n_classes: int
    task: str
    name: str

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        xp = namespace(self.x_train, self.y_train, self.x_test, self.y_test,
                       names=("x_train", "y_train", "x_test", "y_test"))
        for nm in ("x_train", "x_test"):
            a = getattr(self, nm)
            if a.ndim not in (2, 4):
                raise ValueError(f"{nm}: expected a 2-d array (N, n_0) or a 4-d image batch (N, C, H, W), "
                                 f"got shape {tuple(a.shape)}")
        if tuple(self.x_train.shape[1:]) != tuple(self.x_test.shape[1:]):
            raise ValueError(f"x_test: expected per-sample shape {tuple(self.x_train.shape[1:])} (as x_train), "
                             f"got shape {tuple(self.x_test.shape)}")
        for xs, ys in (("x_train", "y_train"), ("x_test", "y_test")):
            x, y = getattr(self, xs), getattr(self, ys)
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"{ys}: expected {x.shape[0]} rows (as {xs}), got shape {tuple(y.shape)}")
            if self.task == "classification":
                if y.ndim != 1 or not xp.isdtype(y.dtype, "integral"):
                    raise ValueError(f"{ys}: classification labels must be an integer array of shape (N,), "
                                     f"got shape {tuple(y.shape)} dtype {y.dtype}")
                if y.shape[0] and (int(xp.min(y)) < 0 or int(xp.max(y)) >= self.n_classes):
                    raise ValueError(f"{ys}: labels must lie in [0, {self.n_classes - 1}], got range "
                                     f"[{int(xp.min(y))}, {int(xp.max(y))}]")
            elif y.ndim != 2:
                raise ValueError(f"{ys}: regression targets must be a 2-d array (N, n_out), got shape "
                                 f"{tuple(y.shape)}")
        if self.task == "classification" and not (isinstance(self.n_classes, int) and self.n_classes >= 2):
            raise ValueError(f"n_classes: expected an int >= 2 for classification, got {self.n_classes!r}")

    @property
    def input_shape(self) -> tuple:
        """Per-sample shape of ``x``: ``(n_0,)`` or ``(C, H, W)`` (a network's ``input_shape``)."""
        return tuple(int(n) for n in self.x_train.shape[1:])

    @property
    def n_inputs(self) -> int:
        """Number of input features per sample (``C*H*W`` for images)."""
        return int(math.prod(self.input_shape))

    @property
    def is_images(self) -> bool:
        return len(self.input_shape) == 3

    def flat(self) -> "Dataset":
        """The same data with each sample flattened to ``(n_0,)`` in row-major (torch ``Flatten``) order."""
        if not self.is_images:
            return self
        xp = self.xp
        f = lambda a: xp.reshape(a, (a.shape[0], self.n_inputs))  # noqa: E731
        return replace(self, x_train=f(self.x_train), x_test=f(self.x_test))

    def images(self, shape) -> "Dataset":
        """The same data with each sample reshaped to the image ``shape = (C, H, W)`` (row-major)."""
        shape = tuple(int(n) for n in shape)
        if len(shape) != 3 or math.prod(shape) != self.n_inputs:
            raise ValueError(f"shape: expected (C, H, W) with C*H*W = {self.n_inputs} inputs, got {shape}")
        xp = self.xp
        f = lambda a: xp.reshape(a, (a.shape[0],) + shape)  # noqa: E731
        return replace(self, x_train=f(self.x_train), x_test=f(self.x_test))

    @property
    def n_outputs(self) -> int:
        """Width of the network output this data needs (``n_classes`` or the target width)."""
        return self.n_classes if self.task == "classification" else int(self.y_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def xp(self):
        return namespace(self.x_train)

    @property
    def dtype(self):
        return self.x_train.dtype

    def to(self, xp=None, dtype=None, device=None) -> "Dataset":
        """The same data on another backend and/or floating dtype (labels stay integer)."""
        ns = resolve_namespace(xp)
        if dtype is None:
            dtype = "float64" if self.dtype == self.xp.float64 else "float32"
        return _make(to_numpy(self.x_train), to_numpy(self.y_train), to_numpy(self.x_test), to_numpy(self.y_test),
                     self.n_classes, self.task, self.name, ns, dtype, device)

    def describe(self) -> str:
        extra = f"{self.n_classes} classes" if self.task == "classification" else f"{self.n_outputs} targets"
        inputs = "x".join(map(str, self.input_shape)) + " images" if self.is_images else f"{self.n_inputs} inputs"
        return (f"{self.name}: {self.n_train} train / {self.n_test} test, {inputs}, {extra}, "
                f"dtype {self.dtype}")


def _make(x_tr, y_tr, x_te, y_te, n_classes, task, name, xp, dtype, device=None) -> Dataset:
    """Move host arrays to ``xp``/``dtype``; labels as int64 for classification."""
    ns = resolve_namespace(xp)
    dt = resolve_dtype(ns, dtype)
    if not isinstance(dtype, str) and dt not in (ns.float32, ns.float64):
        raise ValueError(f"dtype: expected a floating dtype (float32 or float64), got {dtype!r}")

    def lab(y):
        if task == "classification":
            return from_numpy(np.asarray(y, dtype=np.int64), ns, None, device)
        return from_numpy(np.asarray(y, dtype=np.float64), ns, dt, device)

    def inputs(x):  # float32 host data (large generated sets) is not widened on the way
        x = np.asarray(x)
        return from_numpy(x if x.dtype in (np.float32, np.float64) else x.astype(np.float64), ns, dt, device)

    return Dataset(inputs(x_tr), lab(y_tr), inputs(x_te), lab(y_te),
                   int(n_classes), task, name)


def _check_int(value, name, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {value!r}")
    return int(value)


# --- helpers for targets -----------------------------------------------------------------------

def one_hot(y, n_classes: int, dtype=None):
    """Integer labels ``(N,)`` as one-hot floating rows ``(N, n_classes)`` on ``y``'s backend.

    ``dtype`` defaults to float64.
    """
    xp = namespace(y)
    n_classes = _check_int(n_classes, "n_classes", 1)
    if y.ndim != 1 or not xp.isdtype(y.dtype, "integral"):
        raise ValueError(f"y: expected integer labels of shape (N,), got shape {tuple(y.shape)} dtype {y.dtype}")
    dt = resolve_dtype(xp, dtype if dtype is not None else "float64")
    classes = xp.arange(n_classes, dtype=y.dtype, device=device_of(y))
    return xp.astype(y[:, None] == classes[None, :], dt)


def targets(data: Dataset, loss: str, split: str = "train"):
    """The targets a rule trained with ``loss`` expects for ``split`` (``"train"`` or ``"test"``).

    Classification + ``mse``: one-hot rows in the data's dtype. Classification + ``ce``: the integer
    labels. Regression: the floating targets (``ce`` is rejected: it needs class labels).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    y = data.y_train if split == "train" else data.y_test
    if data.task == "regression":
        if loss == "ce":
            raise ValueError(f"loss: 'ce' needs a classification dataset, {data.name!r} is a regression task")
        return y
    if loss == "mse":
        return one_hot(y, data.n_classes, data.dtype)
    return y


# --- scikit-learn digits -----------------------------------------------------------------------

def digits(seed: int = 0, test_size: int = 360, xp=None, dtype="float64", device=None,
           images: bool = False) -> Dataset:
    """scikit-learn's bundled handwritten digits (offline).

    1797 samples of 8x8 = 64 pixel counts in 0..16, divided by 16 so inputs lie in [0, 1];
    10 classes. The train/test split is stratified by class and drawn from ``seed``
    (``sklearn.model_selection.train_test_split(..., stratify=y, random_state=seed)``), so every
    class keeps its share in both parts; ``test_size=360`` gives the usual 1437 / 360 split.

    ``images=True``: ``x`` of shape ``(N, 1, 8, 8)`` (one channel, row-major pixels: the same
    numbers and split as the flat form, ``x_flat = x.reshape(N, 64)``), named ``digits-images``.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("dataset 'digits' needs scikit-learn (pip install refimpl[data])") from exc
    seed = _check_int(seed, "seed", 0)
    test_size = _check_int(test_size, "test_size", 10)
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float64) / 16.0
    y = np.asarray(d.target, dtype=np.int64)
    if test_size > x.shape[0] - 10:
        raise ValueError(f"test_size: expected at most {x.shape[0] - 10} (digits has {x.shape[0]} samples), "
                         f"got {test_size}")
    if not isinstance(images, bool):
        raise TypeError(f"images: expected True or False, got {images!r}")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    if images:
        x_tr, x_te = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    return _make(x_tr, y_tr, x_te, y_te, 10, "classification", "digits-images" if images else "digits", xp, dtype,
                 device)


# --- mnist1d -----------------------------------------------------------------------------------

def mnist1d(seed: int = 42, num_samples: int = 5000, train_split: float = 0.8, xp=None, dtype="float64",
            device=None, **overrides) -> Dataset:
    """MNIST-1D generated locally (``mnist1d.data.make_dataset``; Greydanus 2020).

    40-dimensional 1-D signals, 10 classes; defaults are the package's (5000 samples, 80/20 split,
    ``seed=42``, which reproduce the published data set). Inputs are returned as generated (not
    rescaled). Further generator arguments (``iid_noise_scale``, ``final_seq_length``, ...) pass
    through ``overrides``.

    The generator calls ``set_seed``, which seeds the global ``random`` and ``np.random`` states;
    both are saved before and restored after the call, so the caller's global RNG is untouched.
    """
    try:
        from mnist1d.data import make_dataset, get_dataset_args
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("dataset 'mnist1d' needs the mnist1d package (pip install refimpl[data])") from exc
    seed = _check_int(seed, "seed", 0)
    num_samples = _check_int(num_samples, "num_samples", 10)
    if not 0 < train_split < 1:
        raise ValueError(f"train_split: expected a fraction in (0, 1), got {train_split!r}")
    args = get_dataset_args()
    for k, v in dict(overrides).items():
        if not hasattr(args, k) or k == "url":
            raise ValueError(f"{k}: not an mnist1d generator argument; expected one of "
                             f"{sorted(a for a in vars(args) if a != 'url')}")
        setattr(args, k, v)
    args.seed, args.num_samples, args.train_split = seed, num_samples, float(train_split)
    np_state, py_state = np.random.get_state(), _pyrandom.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        _pyrandom.setstate(py_state)
    return _make(d["x"], d["y"], d["x_test"], d["y_test"], 10, "classification", "mnist1d", xp, dtype, device)


# --- teacher-student ---------------------------------------------------------------------------

def teacher_student(sizes: Sequence[int] = (20, 30, 5), activation: str = "tanh", task: str = "regression",
                    n_train: int = 1000, n_test: int = 500, noise: float = 0.0, seed: int = 0,
                    init: str = "normal", xp=None, dtype="float64", device=None) -> Dataset:
    """Inputs ``x ~ N(0, I_{n_0})`` labelled by a random teacher network drawn from ``seed``.

    The teacher is ``Network.init(sizes, activation, output_activation="linear", init=init)``
    (``init="normal"``: weights ``N(0, 1/fan_in)``), built in float64 on the host.
    ``task="regression"``: ``y = teacher(x) + noise * N(0, I)`` (train and test);
    ``task="classification"``: ``y = argmax teacher(x)`` with ``sizes[-1]`` classes.
    ``activation="linear"`` gives a linear teacher. One seed fixes teacher, inputs and noise.
    """
    from .network import Network  # local: data must not import the network at module level

    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes: expected at least two positive widths [n_0, ..., n_L], got {list(sizes)}")
    if activation not in ("linear", "tanh"):
        raise ValueError(f"activation: expected 'linear' or 'tanh' for the teacher, got {activation!r}")
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if task == "classification" and sizes[-1] < 2:
        raise ValueError(f"sizes: a classification teacher needs >= 2 outputs, got {sizes[-1]}")
    n_train = _check_int(n_train, "n_train")
    n_test = _check_int(n_test, "n_test")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    seed = _check_int(seed, "seed", 0)
    ss = np.random.SeedSequence(seed)
    s_teacher, s_x, s_noise = ss.spawn(3)
    teacher_seed = int(s_teacher.generate_state(1)[0])
    teacher = Network.init(sizes, activation=activation, output_activation="linear", init=init,
                           seed=teacher_seed, dtype="float64")
    gen_x = _rng(s_x)
    x = gen_x.standard_normal((n_train + n_test, sizes[0]))
    out = to_numpy(teacher(teacher.xp.asarray(x)))
    if task == "regression":
        y = out + noise * _rng(s_noise).standard_normal(out.shape) if noise else out
        n_classes = 0
    else:
        y = np.argmax(out, axis=1).astype(np.int64)
        n_classes = sizes[-1]
    name = f"teacher({activation}, {sizes}, {task})"
    return _make(x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes, task, name, xp, dtype, device)


# --- teacher-student images (CIFAR-shaped) ------------------------------------------------------

#: The hidden layers of :func:`teacher_images`'s default teacher (a Linear read-out to
#: ``n_classes`` is appended): a 4x4 patch convolution (stride 4) and a strided 3x3 one, tanh;
#: ~0.1 MFLOP per 3x32x32 image, so labelling 50,000 images costs about as much as drawing them.
IMAGE_TEACHER = "c8k4s4 c16k3s2p1"

_IMAGE_CHUNK = 2048          # samples per generation chunk (fixed: labels must not depend on it)
_CALIBRATION = 8192          # images drawn (own stream) to calibrate the teacher's output offsets
_CALIBRATION_ROUNDS = 30


def _blur_matrix(n: int, smooth: float) -> np.ndarray:
    """The ``n x n`` circulant matrix of a periodic Gaussian blur of ``smooth`` pixels (wrapped
    distance), scaled so that white noise keeps unit variance (``sum_j K[i, j]^2 = 1``)."""
    d = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    d = np.minimum(d, n - d)
    K = np.exp(-0.5 * (d / smooth) ** 2)
    return K / np.sqrt(np.sum(K ** 2, axis=1, keepdims=True))


def _image_chunk(seed: int, split: int, index: int, n: int, shape: tuple, smooth: float) -> np.ndarray:
    """``n`` float64 images of ``shape``: unit-variance Gaussian noise, blurred by a periodic Gaussian of
    standard deviation ``smooth`` pixels along each spatial axis (``smooth = 0``: white noise), still
    unit variance per pixel. Drawn from ``SeedSequence(seed, spawn_key=(split, index))``, so sample
    ``i`` of a split depends on ``(seed, split, i)`` only."""
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, index)))
    x = gen.standard_normal((n,) + tuple(shape))
    if smooth > 0:  # separable: x <- K_H x K_W^T per image and channel (two matmuls)
        x = np.matmul(_blur_matrix(shape[1], smooth), x @ _blur_matrix(shape[2], smooth).T)
    return x


def _image_teacher(seed: int, shape: tuple, n_classes: int, teacher: str, activation: str, smooth: float):
    """The random conv teacher of :func:`teacher_images`, with calibrated output offsets (float64, NumPy)."""
    from .layers import parse_architecture, Linear
    from .network import Network

    specs = parse_architecture(f"{teacher} l{n_classes}") if teacher.strip() else [Linear(out_features=n_classes)]
    net = Network.build(shape, specs, activation=activation, output_activation="linear", init="normal",
                        seed=int(np.random.SeedSequence(seed, spawn_key=(2,)).generate_state(1)[0]), dtype="float64")
    x = _image_chunk(seed, 3, 0, _CALIBRATION, shape, smooth)
    out = np.concatenate([to_numpy(net(x[s:s + _IMAGE_CHUNK])) for s in range(0, _CALIBRATION, _IMAGE_CHUNK)])
    mu, sd = out.mean(axis=0), out.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (out - mu) / sd                                 # each logit standardised over the input distribution
    off = np.zeros(n_classes)
    for _ in range(_CALIBRATION_ROUNDS):                # offsets that equalise the argmax frequencies
        freq = np.bincount(np.argmax(z + off, axis=1), minlength=n_classes) / _CALIBRATION
        off -= 0.5 * np.log(np.maximum(freq, 0.5 / _CALIBRATION) * n_classes)
    W, b = to_numpy(net.weights[-1]), to_numpy(net.biases[-1])
    Wc, bc = W / sd[:, None], (b - mu) / sd + off       # logits' = (logits - mu) / sd + off
    return net.replace(weights=net.weights[:-1] + (net.xp.asarray(Wc),), biases=net.biases[:-1] + (net.xp.asarray(bc),))


def teacher_images(n_train: int = 10000, n_test: int = 2000, shape=(3, 32, 32), n_classes: int = 10,
                   smooth: float = 1.0, teacher: str = IMAGE_TEACHER, activation: str = "tanh", seed: int = 0,
                   xp=None, dtype="float32", device=None, return_teacher: bool = False):
    """Images of ``shape`` (default CIFAR's ``(3, 32, 32)``) labelled by a random convolutional teacher.

    Inputs: each image is Gaussian noise, spatially smoothed by a periodic Gaussian blur of
    ``smooth`` pixels along each axis (0: white noise), scaled to keep unit variance per pixel
    (channels independent). The teacher is ``Network.build(shape, teacher + " l<n_classes>", activation,
    init="normal")`` (weights ``N(0, 1/fan_in)``; default :data:`IMAGE_TEACHER`: a 4x4-patch
    convolution with stride 4, then a strided 3x3 one, tanh), drawn from ``seed``; its output
    layer is then calibrated on 8192 images of a separate stream: each logit is standardised (mean
    0, std 1 over the input distribution) and given an offset, adjusted in 30 damped steps
    ``off_k -= log(K freq_k) / 2``, that equalises the argmax frequencies. Label
    ``y = argmax teacher(x)``. Measured class shares (10 classes, seeds 0-3, 20,000-50,000 images):
    8.8% .. 10.9% (the raw random teacher: 7% .. 14%; the calibration keeps other teachers and
    activations balanced too).

    One ``seed`` fixes the teacher and both splits; sample ``i`` of a split depends only on
    ``(seed, split, i)`` (train and test are separate streams), so a larger ``n_train`` only appends
    images and the test set does not change with ``n_train``. Generation runs on the host in chunks
    of 2048 (vectorised draws, the blur as two matrix products, the teacher in float64 so that
    labels do not hinge on float32 rounding); 50,000 + 2,000 images took 23 s (white) / 44 s
    (smoothed) on the shared 2-core machine at load average ~10. ``dtype`` defaults to float32 (a scale-run data set: 50,000 images are 600 MB
    in float32). ``return_teacher=True`` returns ``(data, teacher)``.
    """
    shape = tuple(check_int_shape(shape))
    n_train = _check_int(n_train, "n_train")
    n_test = _check_int(n_test, "n_test")
    n_classes = _check_int(n_classes, "n_classes", 2)
    seed = _check_int(seed, "seed", 0)
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not math.isfinite(smooth) or smooth < 0:
        raise ValueError(f"smooth: expected a finite number >= 0 (blur width in pixels), got {smooth!r}")
    if not isinstance(teacher, str):
        raise TypeError(f"teacher: expected an architecture string such as {IMAGE_TEACHER!r}, got {teacher!r}")
    host = np.float32 if str(dtype).endswith("float32") else np.float64
    net = _image_teacher(seed, shape, n_classes, teacher, activation, float(smooth))
    parts = {}
    for split, n in ((0, n_train), (1, n_test)):
        xs, ys = [], []
        for c, start in enumerate(range(0, n, _IMAGE_CHUNK)):
            m = min(_IMAGE_CHUNK, n - start)
            x = _image_chunk(seed, split, c, _IMAGE_CHUNK, shape, float(smooth))[:m]
            ys.append(np.argmax(to_numpy(net(x)), axis=1).astype(np.int64))
            xs.append(x.astype(host))
        parts[split] = (np.concatenate(xs), np.concatenate(ys))
    name = f"teacher-images({'x'.join(map(str, shape))}, {n_classes} classes, smooth {smooth:g}, seed {seed})"
    data = _make(parts[0][0], parts[0][1], parts[1][0], parts[1][1], n_classes, "classification", name, xp, dtype,
                 device)
    return (data, net) if return_teacher else data


def check_int_shape(shape) -> tuple:
    """``shape`` as a ``(C, H, W)`` tuple of positive ints, else ValueError naming ``shape``."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3:
        raise ValueError(f"shape: expected an image shape (C, H, W), got {shape!r}")
    return tuple(_check_int(n, "shape", 1) for n in shape)


# --- IDX files ---------------------------------------------------------------------------------

# IDX type codes (LeCun's MNIST page): the third magic byte.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path):
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a host NumPy array.

    Format: magic bytes ``0, 0, type, ndim``; then ``ndim`` big-endian uint32 dimensions; then
    the data in row-major order, big-endian, of the given type (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64). Raises ``ValueError`` naming the file when the magic,
    the type code or the data length is wrong.
    """
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (expected magic bytes 0x00 0x00, got {raw[:2]!r})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of "
                         f"{[hex(c) for c in _IDX_TYPES]}")
    if ndim < 1:
        raise ValueError(f"{path}: IDX file with 0 dimensions")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = np.dtype(_IDX_TYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - 4 - 4 * ndim
    if body != count * dt.itemsize:
        raise ValueError(f"{path}: expected {count * dt.itemsize} data bytes for dimensions {dims} of type "
                         f"{dt.str}, got {body}")
    data = np.frombuffer(raw, dtype=dt, count=count, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dt.newbyteorder("="))


def write_idx(path, array, compress: bool | None = None) -> None:
    """Write a NumPy array as an IDX file (``.gz`` suffix, or ``compress=True``, gzips it).

    The inverse of :func:`read_idx`; used by the tests, and handy to store small data sets.
    """
    a = np.asarray(array)
    inv = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    key = a.dtype.newbyteorder("=")
    if key not in inv:
        raise ValueError(f"array: dtype {a.dtype} has no IDX type code; expected one of "
                         f"{[str(np.dtype(v)) for v in _IDX_TYPES.values()]}")
    if a.ndim < 1 or a.ndim > 255:
        raise ValueError(f"array: expected 1..255 dimensions, got {a.ndim}")
    code = inv[key]
    payload = (bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(a, dtype=_IDX_TYPES[code]).tobytes())
    path = os.fspath(path)
    if compress is None:
        compress = path.endswith(".gz")
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(payload)


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"path: no file {stem}[.gz] in {directory!r} (expected the four MNIST IDX files "
                            f"{list(_MNIST_FILES)})")


def idx(path=None, *, train_images=None, train_labels=None, test_images=None, test_labels=None,
        scale: float | None = None, n_classes: int | None = None, name: str = "idx", xp=None,
        dtype="float64", device=None) -> Dataset:
    """A classification data set from IDX files on disk (e.g. the real MNIST; nothing is downloaded).

    Either ``path``: a directory holding the four MNIST-named files
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each optionally ``.gz``), or the four file paths by keyword.
    Images are flattened to ``(N, prod(image shape))`` and divided by ``scale`` (default 255 for
    uint8 images, else 1). ``n_classes`` defaults to ``max label + 1``.
    """
    files = [train_images, train_labels, test_images, test_labels]
    if path is not None:
        if any(f is not None for f in files):
            raise ValueError("path: give either a directory or the four file paths, not both")
        files = [_find(os.fspath(path), s) for s in _MNIST_FILES]
    elif any(f is None for f in files):
        raise ValueError("idx: expected a directory `path` or all four of train_images, train_labels, "
                         "test_images, test_labels")
    xi, yi, xt, yt = (read_idx(f) for f in files)
    for nm, lab, img in (("train_labels", yi, xi), ("test_labels", yt, xt)):
        if lab.ndim != 1 or lab.shape[0] != img.shape[0]:
            raise ValueError(f"{nm}: expected a 1-d label file with {img.shape[0]} entries (as the images), "
                             f"got shape {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{nm}: expected integer labels, got dtype {lab.dtype}")
    if scale is None:
        scale = 255.0 if xi.dtype == np.uint8 else 1.0
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a finite number > 0, got {scale!r}")
    k = int(max(yi.max(), yt.max())) + 1 if n_classes is None else _check_int(n_classes, "n_classes", 2)
    flat = lambda a: a.reshape(a.shape[0], -1).astype(np.float64) / scale  # noqa: E731
    return _make(flat(xi), yi, flat(xt), yt, max(k, 2), "classification", name, xp, dtype, device)


# --- by name -----------------------------------------------------------------------------------

def load(name: str, *, seed: int | None = None, xp=None, dtype="float64", device=None, **kwargs) -> Dataset:
    """A data set by name: ``digits`` (``images=True``: 1x8x8), ``mnist1d``, ``teacher``
    (teacher-student), ``teacher-images`` (:func:`teacher_images`) or ``idx`` (needs ``path=``).
    ``seed`` is the split seed (digits), generator seed (mnist1d; default 42) or teacher seed
    (teacher, teacher-images); other keywords go to the loader."""
    if name == "digits":
        return digits(seed=0 if seed is None else seed, xp=xp, dtype=dtype, device=device, **kwargs)
    if name == "mnist1d":
        return mnist1d(seed=42 if seed is None else seed, xp=xp, dtype=dtype, device=device, **kwargs)
    if name == "teacher":
        return teacher_student(seed=0 if seed is None else seed, xp=xp, dtype=dtype, device=device, **kwargs)
    if name == "teacher-images":
        return teacher_images(seed=0 if seed is None else seed, xp=xp, dtype=dtype, device=device, **kwargs)
    if name == "idx":
        return idx(xp=xp, dtype=dtype, device=device, **kwargs)
    raise ValueError(f"data: unknown data set {name!r}; expected one of {DATASETS}")

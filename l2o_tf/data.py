"""MNIST and CIFAR-10 from local copies first, download last, and never silently from a subset.

Search order for each data set:

1. an explicit ``data_dir`` argument, else the ``L2O_DATA_DIR`` environment
   variable (layout: ``mnist/*-ubyte.gz`` as LeCun published them,
   ``cifar10/cifar10.npz`` with ``x_train, y_train, x_test, y_test``).  A
   directory that is named but lacks the data is an error, not a fall-through;
2. the Keras cache (``$KERAS_HOME`` or ``~/.keras``, ``datasets/mnist.npz``,
   ``datasets/cifar-10-batches-py``);
3. ``tensorflow_datasets``: its local cache, then, with ``download=True``, its
   download, tried only when the download host answers within seconds (an
   offline machine goes on at once instead of retrying for minutes);
4. MNIST only: the 6,000/1,000-image subset shipped in ``l2o_tf/bundled``,
   used with one loud :class:`SubsetWarning` and recorded in :attr:`Dataset.source`.

When none has the data set, one ``FileNotFoundError`` lists every place looked at.

A :class:`Dataset` unpacks like ``keras.datasets.mnist.load_data()``::

    (x_train, y_train), (x_test, y_test) = l2o_tf.data.load_mnist()
"""

import dataclasses
import functools
import gzip
import os
import pickle
import socket
import warnings
import zlib

import numpy as np
from absl import logging

DATA_DIR_ENV = "L2O_DATA_DIR"
MNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz", 2051),
    "y_train": ("train-labels-idx1-ubyte.gz", 2049),
    "x_test": ("t10k-images-idx3-ubyte.gz", 2051),
    "y_test": ("t10k-labels-idx1-ubyte.gz", 2049),
}
BUNDLED_MNIST = os.path.join(os.path.dirname(__file__), "bundled", "mnist_subset.npz")
GET_FULL_MNIST = (
    "For the full data set put the four LeCun files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder DIR/mnist and set L2O_DATA_DIR=DIR, "
    "or put Keras's mnist.npz in ~/.keras/datasets, or run once online (tensorflow_datasets downloads it)."
)
SUBSET_WARNING = (
    "USING THE BUNDLED MNIST SUBSET (6,000 train / 1,000 test images), NOT THE FULL MNIST: "
    "{source}. Results on it are not comparable with full-MNIST results. " + GET_FULL_MNIST
)
# Where tensorflow_datasets downloads MNIST and CIFAR-10 from; probed before a download is tried.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class SubsetWarning(UserWarning):
    """The bundled MNIST subset stands in for the real data set."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as uint8 ``[N, H, W, C]`` and integer labels ``[N]``, plus where they came from."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    is_subset: bool = False

    @property
    def num_classes(self):
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def __iter__(self):
        """``(x_train, y_train), (x_test, y_test)``, as ``keras.datasets.*.load_data()`` returns them."""
        return iter(((self.x_train, self.y_train), (self.x_test, self.y_test)))


class DataError(ValueError):
    """A data file exists but cannot be read as the data set it claims to be."""


def load_mnist(data_dir=None, download=True):
    """MNIST as a :class:`Dataset`: 60,000 train and 10,000 test uint8 images ``[N, 28, 28, 1]``
    (values 0-255: divide by 255) and int32 labels ``[N]``.

    Unpacks as ``(x_train, y_train), (x_test, y_test)``; ``.source`` says where it came
    from and ``.is_subset`` whether it is less than the full data set (see module doc).
    """
    return _announce(_load("mnist", _resolve_dir(data_dir), _keras_datasets_dir(), bool(download)))


def load_cifar10(data_dir=None, download=True):
    """CIFAR-10 as a :class:`Dataset` of uint8 ``[N, 32, 32, 3]`` images and int32 labels ``[N]``;
    unpacks like :func:`load_mnist`."""
    return _announce(_load("cifar10", _resolve_dir(data_dir), _keras_datasets_dir(), bool(download)))


def load(name, data_dir=None, download=True):
    """A data set by name: ``mnist`` or ``cifar10``."""
    loaders = {"mnist": load_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise ValueError(f"Unknown data set {name!r}; known: {', '.join(sorted(loaders))}.")
    return loaders[name](data_dir=data_dir, download=download)


def _announce(dataset):
    """Warn once per load when the bundled subset stands in for the real data set."""
    if dataset.source.startswith("bundled subset"):
        warnings.warn(SUBSET_WARNING.format(source=dataset.source), SubsetWarning, stacklevel=3)
    return dataset


def _resolve_dir(data_dir):
    if data_dir is not None:
        return ("data_dir argument", os.fspath(data_dir))
    if os.environ.get(DATA_DIR_ENV):
        return (f"${DATA_DIR_ENV}", os.environ[DATA_DIR_ENV])
    return None


def _keras_datasets_dir():
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "datasets")


@functools.lru_cache(maxsize=8)
def _load(name, explicit, keras_dir, download):
    """Search for data set ``name``; cached per resolved location so it is parsed once."""
    readers = {"mnist": (_read_mnist_dir, _read_keras_mnist), "cifar10": (_read_cifar_dir, _read_keras_cifar)}
    read_dir, read_keras = readers[name]
    if explicit is not None:
        label, path = explicit
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{name}: the {label} {path!r} is not a directory.")
        found = read_dir(path)
        if found is None:
            raise FileNotFoundError(
                f"{name}: not found in the {label} {path!r} (expected {_expected_layout(name)})."
            )
        return found
    looked = []
    found = read_keras(keras_dir)
    looked.append(f"Keras cache {keras_dir}")
    if found is None:
        found, where = _read_tfds(name, download)
        looked.append(where)
    if found is None and name == "mnist" and os.path.exists(BUNDLED_MNIST):
        places = "; ".join([f"${DATA_DIR_ENV} (unset)"] + looked)
        return _read_npz(name, BUNDLED_MNIST, source=f"bundled subset {BUNDLED_MNIST} (not found in: {places})", is_subset=True)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found. Looked in: data_dir argument (none given); ${DATA_DIR_ENV} (unset); "
            + "; ".join(looked)
            + f". Fix: set {DATA_DIR_ENV} to a directory holding {_expected_layout(name)}."
        )
    return found


def _expected_layout(name):
    if name == "mnist":
        return "mnist/" + ", mnist/".join(f for f, _ in MNIST_FILES.values())
    return "cifar10/cifar10.npz"


def _read_mnist_dir(path):
    for folder in (os.path.join(path, "mnist"), path):
        files = {k: os.path.join(folder, f) for k, (f, _) in MNIST_FILES.items()}
        if all(os.path.exists(f) for f in files.values()):
            arrays = {k: _read_idx(files[k], MNIST_FILES[k][1]) for k in files}
            return _dataset("mnist", arrays, source=f"idx files in {folder}")
    return None


def _read_idx(path, magic):
    """One gzip'd IDX file (big-endian header, uint8 data), checked against its header."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"corrupt MNIST file {path}: {e}. Replace it with the original.") from e
    header_len = 16 if magic == 2051 else 8
    if len(raw) < header_len:
        raise DataError(f"corrupt MNIST file {path}: {len(raw)} bytes, shorter than its header.")
    header = np.frombuffer(raw[:header_len], dtype=">u4")
    if int(header[0]) != magic:
        raise DataError(f"corrupt MNIST file {path}: magic {int(header[0])}, expected {magic}.")
    shape = tuple(int(d) for d in header[1:])
    data = np.frombuffer(raw, np.uint8, offset=header_len)
    if data.size != int(np.prod(shape)):
        raise DataError(
            f"corrupt MNIST file {path}: {data.size} data bytes, header says {int(np.prod(shape))}."
        )
    return data.reshape(shape)


def _read_keras_mnist(keras_dir):
    path = os.path.join(keras_dir, "mnist.npz")
    return _read_npz("mnist", path, source=f"Keras cache {path}") if os.path.exists(path) else None


def _read_cifar_dir(path):
    for candidate in (os.path.join(path, "cifar10", "cifar10.npz"), os.path.join(path, "cifar10.npz")):
        if os.path.exists(candidate):
            return _read_npz("cifar10", candidate, source=f"npz {candidate}")
    return None


def _read_keras_cifar(keras_dir):
    folder = os.path.join(keras_dir, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all(os.path.exists(os.path.join(folder, n)) for n in names):
        return None
    batches = []
    for n in names:
        try:
            with open(os.path.join(folder, n), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
        except Exception as e:  # pickle raises many types on a damaged file
            raise DataError(f"corrupt CIFAR-10 batch {os.path.join(folder, n)}: {e}.") from e
        x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        batches.append((x, np.asarray(batch[b"labels"], np.uint8)))
    arrays = {
        "x_train": np.concatenate([b[0] for b in batches[:5]]),
        "y_train": np.concatenate([b[1] for b in batches[:5]]),
        "x_test": batches[5][0],
        "y_test": batches[5][1],
    }
    return _dataset("cifar10", arrays, source=f"Keras cache {folder}")


def _read_npz(name, path, source, is_subset=None):
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as e:
        raise DataError(f"{name} file {path} lacks array {e}; expected x_train, y_train, x_test, y_test.") from e
    except Exception as e:  # zipfile/zlib/pickle errors on a damaged npz
        raise DataError(f"corrupt {name} file {path}: {e}.") from e
    return _dataset(name, arrays, source, is_subset)


def _host_reachable(address, timeout=3.0):
    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except OSError:
        return False


def _read_tfds(name, download):
    """tensorflow_datasets' local cache, then its download if asked for and the host answers."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # tfds logs each cache miss; the source string reports the outcome
    try:
        import tensorflow_datasets as tfds

        def read(with_download):
            splits = tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True,
                               download=with_download)
            return tfds.as_numpy(splits)

        try:
            (x_train, y_train), (x_test, y_test) = read(False)
        except Exception as e:  # noqa: BLE001  (tfds raises assorted errors when not in its cache)
            if not download:
                return None, f"tensorflow_datasets cache ({type(e).__name__}), download=False"
            if not _host_reachable(DOWNLOAD_HOST):
                return None, f"tensorflow_datasets cache (empty); download skipped: {DOWNLOAD_HOST[0]} unreachable (offline)"
            (x_train, y_train), (x_test, y_test) = read(True)
    except Exception as e:  # tfds raises assorted errors on partial caches and failed downloads
        return None, f"tensorflow_datasets (download={download}): {type(e).__name__}: {str(e)[:120]}"
    finally:
        logging.set_verbosity(verbosity)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _dataset(name, arrays, source="tensorflow_datasets"), "tensorflow_datasets"


_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
_FULL_TRAIN = {"mnist": 60000, "cifar10": 50000}


def _dataset(name, arrays, source, is_subset=None):
    shape = _SHAPES[name]
    out = {}
    for split in ("train", "test"):
        x = np.asarray(arrays[f"x_{split}"])
        y = np.asarray(arrays[f"y_{split}"]).reshape(-1)
        if x.dtype != np.uint8 or x.size != len(x) * int(np.prod(shape)) or len(x) != len(y):
            raise DataError(
                f"{name} from {source}: x_{split} {x.dtype}{list(x.shape)} and y_{split} "
                f"{list(y.shape)} do not form uint8 images of shape {shape} with one label each."
            )
        out[f"x_{split}"] = x.reshape((len(x),) + shape)
        out[f"y_{split}"] = y.astype(np.int32)
    if is_subset is None:
        is_subset = len(out["x_train"]) < _FULL_TRAIN[name]
    if is_subset:
        source = f"{source} [SUBSET: {len(out['x_train'])} train / {len(out['x_test'])} test images]"
    return Dataset(name=name, source=source, is_subset=is_subset, **out)

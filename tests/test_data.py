"""Data loading: the real files, the search order, and one clear error per failure."""

import gzip
import os
import shutil

import numpy as np
import pytest

from l2o_tf import data, tasks

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_TRAIN_COUNTS = [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]


@pytest.fixture
def shared_data():
    path = os.environ.get("L2O_DATA_DIR")
    if not path or not os.path.isdir(os.path.join(path, "mnist")):
        pytest.skip("L2O_DATA_DIR with the shared data sets is not available")
    return path


@pytest.fixture
def no_sources(tmp_path, monkeypatch):
    """Nothing anywhere: no L2O_DATA_DIR, an empty Keras home and TFDS dir, no downloads."""
    monkeypatch.delenv("L2O_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return tmp_path


def test_mnist_from_shared_data_matches_published_counts(shared_data):
    mnist = data.load_mnist(shared_data)
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and not mnist.is_subset
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    assert "idx files" in mnist.source


def test_cifar_from_shared_data_is_flagged_as_subset(shared_data):
    cifar = data.load_cifar10(shared_data)
    assert cifar.x_train.shape == (10000, 32, 32, 3) and cifar.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(cifar.y_train).tolist() == CIFAR_TRAIN_COUNTS
    assert np.bincount(cifar.y_test).tolist() == [1000] * 10
    assert cifar.is_subset and "SUBSET: 10000 train" in cifar.source
    mean = cifar.x_test.reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(mean, [0.4942, 0.4851, 0.4504], atol=1e-3)


def test_environment_variable_is_used(shared_data, monkeypatch):
    monkeypatch.setenv("L2O_DATA_DIR", shared_data)
    assert data.load_mnist().source == data.load_mnist(shared_data).source


def test_named_directory_without_data_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        data.load_mnist(tmp_path / "missing")
    monkeypatch.setenv("L2O_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"not found in the \$L2O_DATA_DIR .*train-images-idx3-ubyte.gz"):
        data.load_mnist()


def _copy_mnist(shared, dest):
    os.makedirs(dest / "mnist")
    for name, _ in data.MNIST_FILES.values():
        shutil.copy(os.path.join(shared, "mnist", name), dest / "mnist" / name)
    return dest / "mnist"


def test_truncated_file_is_reported(shared_data, tmp_path):
    folder = _copy_mnist(shared_data, tmp_path)
    path = folder / "train-labels-idx1-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataError, match="corrupt MNIST file .*train-labels-idx1-ubyte.gz"):
        data.load_mnist(tmp_path)


def test_wrong_header_is_reported(shared_data, tmp_path):
    folder = _copy_mnist(shared_data, tmp_path)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([2051, 3], ">u4").tobytes() + bytes(3))
    with pytest.raises(data.DataError, match="magic 2051, expected 2049"):
        data.load_mnist(tmp_path)


def test_keras_cache_is_second(no_sources):
    os.makedirs(no_sources / "keras" / "datasets")
    gen = np.random.default_rng(0)
    images = lambda n: gen.integers(0, 255, (n, 28, 28), dtype=np.uint8)  # noqa: E731
    np.savez(
        no_sources / "keras" / "datasets" / "mnist.npz",
        x_train=images(60000), y_train=np.arange(60000) % 10, x_test=images(30), y_test=np.arange(30) % 10,
    )
    mnist = data.load_mnist(download=False)
    assert mnist.source.startswith("Keras cache") and len(mnist.x_test) == 30


def test_bundled_subset_is_the_loud_last_resort(no_sources):
    with pytest.warns(UserWarning, match="BUNDLED MNIST SUBSET"):
        mnist = data.load_mnist(download=False)
    assert mnist.is_subset and mnist.source.startswith("bundled subset")
    assert "Keras cache" in mnist.source and "tensorflow_datasets" in mnist.source
    assert mnist.x_train.shape == (6000, 28, 28, 1) and mnist.x_test.shape == (1000, 28, 28, 1)
    assert os.path.getsize(data.BUNDLED_MNIST) < 3 * 2**20
    with pytest.warns(UserWarning, match="BUNDLED MNIST SUBSET"):
        task = tasks.mnist_mlp(batch_size=4)
        assert "bundled subset" in task.data_source


def test_a_dataset_unpacks_like_keras_load_data(shared_data):
    mnist = data.load_mnist()
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train is mnist.x_train and y_test is mnist.y_test
    assert x_train.shape == (60000, 28, 28, 1) and y_train.shape == (60000,) and x_test.shape[0] == len(y_test)


def test_offline_download_is_skipped_at_once_and_the_subset_warns_once(no_sources, monkeypatch):
    """With download=True and no network the subset is reached in seconds, with exactly one warning."""
    import time  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    monkeypatch.setattr(data, "DOWNLOAD_HOST", ("unreachable.invalid", 443))
    data._load.cache_clear()
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mnist = data.load_mnist(download=True)
    assert time.time() - start < 20
    assert mnist.is_subset and "download skipped: unreachable.invalid unreachable (offline)" in mnist.source
    subset_warnings = [w for w in caught if issubclass(w.category, data.SubsetWarning)]
    assert len(subset_warnings) == 1 and "L2O_DATA_DIR" in str(subset_warnings[0].message)


def test_tfds_imports_what_it_needs():
    """tensorflow_datasets reads its cache through importlib_resources, which it does not declare."""
    import importlib_resources  # noqa: F401, PLC0415
    import tensorflow_datasets as tfds  # noqa: PLC0415

    assert tfds.builder("mnist").name == "mnist"


def test_missing_everywhere_lists_every_place(no_sources):
    with pytest.raises(FileNotFoundError) as error:
        data.load_cifar10(download=False)
    message = str(error.value)
    for place in ("data_dir argument", "$L2O_DATA_DIR", "Keras cache", "tensorflow_datasets", "cifar10/cifar10.npz"):
        assert place in message


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Unknown data set 'svhn'"):
        data.load("svhn")

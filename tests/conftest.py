"""Shared test set-up: quiet TF, data from ../shared/data when L2O_DATA_DIR is unset, two logical CPUs.

The CPU is split into two logical devices before TensorFlow starts, so that
MirroredStrategy can be tested with two replicas on a machine without GPUs;
ops still run on /cpu:0 unless placed elsewhere.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
if not os.environ.get("L2O_DATA_DIR") and os.path.isdir(_SHARED):
    os.environ["L2O_DATA_DIR"] = os.path.abspath(_SHARED)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


"""Shared test set-up: quiet TF, data from ../shared/data when L2O_DATA_DIR is unset."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
if not os.environ.get("L2O_DATA_DIR") and os.path.isdir(_SHARED):
    os.environ["L2O_DATA_DIR"] = os.path.abspath(_SHARED)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


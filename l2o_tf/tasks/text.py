"""An offline text corpus for language-model optimizees, cut into next-character windows.

The corpus is CPython's ``pydoc_data.topics``: the English reference text behind
``help()`` (the Python Language Reference's topics, PSF licence), which ships with
every CPython installation, so language-model tasks need no download.  Characters
are ASCII codes (anything else becomes ``?``): a vocabulary of 128.
"""

import functools
import types

import numpy as np

VOCAB_SIZE = 128
SOURCE = "CPython pydoc_data.topics (Python Language Reference help topics, PSF licence), ASCII characters"


@functools.lru_cache(maxsize=1)
def corpus():
    """The corpus as one string (topics in sorted order: the same text on every machine with this Python)."""
    from pydoc_data import topics  # noqa: PLC0415  (only language-model tasks need it)

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


@functools.lru_cache(maxsize=8)
def char_windows(seq_len, stride=4, test_fraction=0.1):
    """Next-character windows: ``x[i] = text[s:s+L]``, ``y[i] = text[s+1:s+L+1]``, ``s = i * stride``.

    The last ``test_fraction`` of the text is the test split (no window crosses the cut).
    Returned like an ``l2o_tf.data.Dataset``: ``x_train, y_train, x_test, y_test, source``.
    """
    codes = np.frombuffer(corpus().encode("ascii", "replace"), np.uint8).astype(np.int32)
    cut = int(len(codes) * (1 - test_fraction))

    def windows(part):
        starts = np.arange(0, len(part) - seq_len - 1, stride)
        index = starts[:, None] + np.arange(seq_len)[None]
        return part[index], part[index + 1]

    (x_train, y_train), (x_test, y_test) = windows(codes[:cut]), windows(codes[cut:])
    return types.SimpleNamespace(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                                 source=f"{SOURCE}; {len(codes)} characters, last {test_fraction:.0%} held out")

"""Shared flag parsing for the binaries: ``key=value`` lists, and one-line errors instead of tracebacks."""

import json
import os
import sys

from absl import logging


def parse_kwargs(items, flag):
    """``["sigma=100", "dim=10"]`` -> ``{"sigma": 100.0, "dim": 10}`` (JSON values, else strings)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{flag}: {item!r} is not key=value.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_writable(path):
    """Fail before any work when ``--output`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--output {path!r}: cannot create {directory!r} ({e.strerror}).") from None
    if not os.access(directory, os.W_OK):
        raise ValueError(f"--output {path!r}: directory {directory!r} is not writable.")


def run_cleanly(main_fn):
    """Call ``main_fn``; a ValueError/TypeError/FileNotFoundError becomes one line on stderr, exit 2."""

    def wrapped(argv):
        try:
            return main_fn(argv)
        except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as e:
            logging.flush()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped

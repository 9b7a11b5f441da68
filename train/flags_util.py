"""Shared flag parsing for the binaries: ``key=value`` lists, and one-line errors instead of tracebacks."""

import json
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

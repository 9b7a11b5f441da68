"""The README's "Use" snippet runs as written and trains the model it shows."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _use_snippet():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"## Use\n\n```python\n(.*?)```", text, re.S).group(1)


def test_use_snippet_reaches_90_percent_test_accuracy_on_full_mnist(tmp_path):
    data_dir = os.environ.get("L2O_DATA_DIR")
    if not data_dir or not os.path.isdir(os.path.join(data_dir, "mnist")):
        pytest.skip("needs the full MNIST in L2O_DATA_DIR")
    script = tmp_path / "use.py"
    script.write_text(_use_snippet())
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy >= 0.90, result.stdout[-2000:]
    assert "SUBSET" not in result.stdout + result.stderr

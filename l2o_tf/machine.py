"""What a figure was measured on: CPU model, cores, vector extensions, TensorFlow / Keras versions.

CPUs differ between machines (AVX-512 or AVX2 only) and a kernel's speed with them, so every
benchmark and every timed result records this.
"""

import os
import platform

# The vector extensions that decide a CPU kernel's speed.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def describe():
    """``{processor, cores, python, tensorflow, keras, cpu_model, vector_extensions}`` of this machine."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    description = {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                   "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            fields = dict(line.split(":", 1) for line in cpuinfo if ":" in line)
    except OSError:
        return description
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    description["cpu_model"] = fields.get("model name", "")
    flags = fields.get("flags", "").split()
    description["vector_extensions"] = [f for f in VECTOR_EXTENSIONS if f in flags]
    return description

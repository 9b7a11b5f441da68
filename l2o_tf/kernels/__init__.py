"""Native CPU kernels, compiled on first use against the installed TensorFlow.

- ``lstm_stack_step``: the fused step of :class:`l2o_tf.rules.lstm.LSTMStack`, with its
  gradient (a second fused op), so that meta-training unrolls
  (``MetaTrainConfig.from_flat(native_kernel=True)``) run it;
- ``rnnprop_step`` and ``dmlstm_step``: the whole step of :class:`l2o_tf.rules.RNNprop` and
  :class:`l2o_tf.rules.DMLSTM` (preprocessing, stack, head) in one pass, forward only: what
  ``LearnedOptimizer(native_kernel=True)`` applies, where nothing differentiates the step;
- ``adafac_mlp_step``: the whole step of :class:`l2o_tf.rules.AdafacMLP` for one tensor (features,
  their per-tensor normalisation, the MLP) in three passes over memory, forward only, likewise.

The sources ship with the package; the first use compiles them with the system C++ compiler
(``$CXX``, else ``c++``, ``g++`` or ``clang++``) and the flags of ``tf.sysconfig`` into
``$L2O_KERNEL_CACHE`` (default ``~/.cache/l2o_tf/kernels``), keyed by the sources, the
TensorFlow version, the compiler and its flags, and this CPU, so later processes load the
library in milliseconds.  ``$L2O_KERNEL_MARCH`` (default ``native``) is the ``-march`` they are
built for: ``haswell`` builds the AVX2 kernels on an AVX-512 machine (what an AVX2-only CPU runs).
"""

import contextlib
import contextvars
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings

import tensorflow as tf

_HERE = os.path.dirname(__file__)
# The ops (compiled together into one library) and the header they share (hashed into the cache key).
_SOURCES = [os.path.join(_HERE, name) for name in ("lstm_stack_step.cc", "rule_step.cc", "adafac_step.cc")]
_HEADERS = [os.path.join(_HERE, name) for name in ("lstm_core.h", "vec_math.h")]
_NATIVE = contextvars.ContextVar("l2o_tf_native_kernels", default=None)  # None, "stack" or "whole_rule"
_library = None


class KernelBuildError(RuntimeError):
    """The native kernel could not be compiled or loaded (no compiler, no TF headers...)."""


@contextlib.contextmanager
def native(enabled=True, whole_rule=False):
    """Within this block (while tracing), LSTM stacks run the native fused kernel.

    With ``whole_rule``, rules that have a native kernel for their whole step (RNNprop, DM-LSTM, AdafacMLP)
    run that instead: it has no gradient, so only where the step is applied, not differentiated.
    """
    token = _NATIVE.set(("whole_rule" if whole_rule else "stack") if enabled else None)
    try:
        yield
    finally:
        _NATIVE.reset(token)


def native_enabled():
    """Whether LSTM stacks run the native kernel here."""
    return _NATIVE.get() is not None


def whole_rule_enabled():
    """Whether rules run their forward-only native whole-step kernel here."""
    return _NATIVE.get() == "whole_rule"


def _compiler():
    """The C++ compiler: ``$CXX`` if set, else the first of c++, g++, clang++ on the PATH."""
    requested = os.environ.get("CXX")
    candidates = [requested] if requested else ["c++", "g++", "clang++"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    wanted = f"$CXX={requested!r} is not an executable" if requested else "none of c++, g++, clang++ is on the PATH"
    raise KernelBuildError(
        f"native_kernel=True needs a C++ compiler to build l2o_tf's fused kernels: {wanted} "
        "(install g++ or set $CXX); native_kernel=False runs the same step in TensorFlow.")


def _cpu_signature():
    """The CPU's model and feature flags: the kernel is built with -march=native."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _accepts(compiler, flag):
    """Whether ``compiler`` knows ``flag`` (a preprocessor-only run: milliseconds)."""
    probe = subprocess.run([compiler, flag, "-E", "-x", "c++", os.devnull, "-o", os.devnull], capture_output=True)
    return probe.returncode == 0


def _command(compiler, output):
    # -march=native turns on AVX512-FP16 on CPUs that have it (Sapphire Rapids and later), and
    # TensorFlow's bundled Eigen then fails to compile (PacketMathFP16.h) with GCC 12.  The
    # kernels compute in float32, so they lose nothing without it.
    no_fp16 = ["-mno-avx512fp16"] if _accepts(compiler, "-mno-avx512fp16") else []
    march = os.environ.get("L2O_KERNEL_MARCH") or "native"
    return ([compiler, "-std=c++17", "-shared", "-fPIC", "-O3", f"-march={march}", *no_fp16, "-ffp-contract=fast", "-w",
             *_SOURCES, "-o", output]
            + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def library_path():
    """Path of the compiled kernels for these sources, TensorFlow and CPU (built if missing)."""
    compiler = _compiler()
    key = hashlib.sha256()
    for name in _SOURCES + _HEADERS:
        with open(name, "rb") as source:
            key.update(source.read())
    for part in (tf.__version__, compiler, " ".join(_command(compiler, "")), _cpu_signature()):
        key.update(part.encode())
    cache = os.environ.get("L2O_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "l2o_tf", "kernels")
    path = os.path.join(cache, f"l2o_tf_kernels-{key.hexdigest()[:16]}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    handle, scratch = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(handle)
    # One line before the only slow part, so that a first native_kernel=True is not silent.
    print(f"l2o_tf: compiling the native CPU kernels with {compiler} (about 20-40 s, once per machine) ...",
          file=sys.stderr, flush=True)
    result = subprocess.run(_command(compiler, scratch), capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(scratch)
        raise KernelBuildError(f"compiling {', '.join(_SOURCES)} failed ({compiler}):\n{result.stderr[-3000:]}")
    os.replace(scratch, path)  # atomic: concurrent builders never load a half-written file
    return path


def load():
    """The op library (compiled on first use); raises :class:`KernelBuildError` if it cannot be."""
    global _library
    if _library is None:
        path = library_path()
        try:
            _library = tf.load_op_library(path)
        except (tf.errors.NotFoundError, OSError) as error:
            raise KernelBuildError(f"loading the compiled kernel {path} failed: {error}") from error
    return _library


def usable_here(who, fallback):
    """Whether the native kernels are the step to run here: no GPU or TPU (those run TensorFlow's or
    XLA's kernels) and the kernels build; if they do not build, one warning from ``who`` says so and
    names ``fallback`` (what runs instead, and the setting that silences it).  The warning points at
    the caller's caller's caller: the user's line that built the optimizer or the trainer."""
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return False
    try:
        load()
    except KernelBuildError as error:
        warnings.warn(f"{who}: the native CPU kernel is unavailable ({str(error).splitlines()[0]}); {fallback}.",
                      stacklevel=4)
        return False
    return True


def lstm_stack_step(inputs, state, new_prefix, kernels, biases, embedding=None):
    """One fused LSTM-stack step for every row (differentiable; see ``lstm_stack_step.cc``).

    ``state`` is ``[n, k + 2 * layers * H]``: ``k`` columns the caller owns, then ``h, c`` of
    each layer; the new state's first ``k`` columns are ``new_prefix``.  ``kernels`` and
    ``biases`` are already multiplied by the gate scale.  ``embedding=(kernel, bias)`` first
    maps the inputs through ``elu(inputs @ kernel + bias)``.  Returns (top output, new state).
    """
    extra = [[], []] if embedding is None else [[embedding[0]], [embedding[1]]]
    return load().l2o_lstm_stack_step(inputs, state, new_prefix, kernels, biases, *extra)


@tf.RegisterGradient("L2oLstmStackStep")
def _lstm_stack_step_grad(op, d_output, d_new_state):
    """The fused backward op for inputs, state and weights; ``new_prefix`` gets its columns of ``d_new_state``."""
    layers, embeds = op.get_attr("num_layers"), op.get_attr("num_embed")
    inputs, state, new_prefix = op.inputs[:3]
    weights = list(op.inputs[3:])
    d_output = tf.zeros_like(op.outputs[0]) if d_output is None else d_output
    d_new_state = tf.zeros_like(op.outputs[1]) if d_new_state is None else d_new_state
    d_inputs, d_state, d_kernels, d_biases, d_input_kernel, d_input_bias = load().l2o_lstm_stack_step_grad(
        inputs, state, d_output, d_new_state, weights[:layers], weights[layers:2 * layers],
        weights[2 * layers:2 * layers + embeds], weights[2 * layers + embeds:])
    return ([d_inputs, d_state, d_new_state[:, :tf.shape(new_prefix)[1]]] + list(d_kernels) + list(d_biases)
            + list(d_input_kernel) + list(d_input_bias))


def rnnprop_step(grads, state, coefficients, stack_weights, input_layer, output_layer, output_form):
    """The whole RNNprop step for every coordinate (forward only; see ``rule_step.cc``).

    ``coefficients`` is ``[beta, 1 - beta, 1 - beta^t]`` per moment, then ``epsilon`` and
    ``output_scale``; ``stack_weights`` is the stack's gate-scaled ``(kernels, biases)``;
    ``input_layer`` and ``output_layer`` are ``(kernel, bias)``.  Returns (updates, new state).
    """
    return load().l2o_rnnprop_step(grads, state, coefficients, *stack_weights, *input_layer, *output_layer,
                                   output_form=output_form)


def dmlstm_step(grads, state, coefficients, stack_weights, output_layer, preprocess):
    """The whole DM-LSTM step for every coordinate (forward only; see ``rule_step.cc``).

    ``coefficients`` is ``[k, e^-k, e^k, output_scale]`` (``k``: the log-and-sign
    preprocessing's); the other arguments as in :func:`rnnprop_step`.
    """
    return load().l2o_dmlstm_step(grads, state, coefficients, *stack_weights, *output_layer, preprocess=preprocess)


def adafac_mlp_step(grads, params, state, coefficients, kernels, biases, moments, grid):
    """The whole AdafacMLP step for one tensor's coordinates (forward only; see ``adafac_step.cc``).

    ``coefficients``: per momentum its decay and ``1 - decay``, the RMS decay and ``1 - decay``, per
    Adafactor factor its decay and ``1 - decay``, then ``exp_mult``, ``step_mult``, the Adam prior's
    factor and Adam's epsilon.  ``kernels[0]`` maps the features only (the step embedding is folded
    into ``biases[0]``).  ``grid``: the tensor's last two dimensions ``(rows, cols)``, or None if it
    is not factored.  Returns (updates, new state).
    """
    rows, cols = grid or (0, 0)
    return load().l2o_adafac_mlp_step(grads, params, state, coefficients, kernels, biases, moments=moments,
                                      num_rows=rows, num_cols=cols)


def _forward_only(op, d_updates, d_new_state):
    raise NotImplementedError(
        "the native whole-step rule kernels (LearnedOptimizer(native_kernel=True)'s apply step) have no "
        "gradient: differentiate the rule outside kernels.native(whole_rule=True), e.g. with "
        "MetaTrainConfig.from_flat(native_kernel=True), whose unrolls run the differentiable native LSTM kernel.")


tf.RegisterGradient("L2oRnnpropStep")(_forward_only)
tf.RegisterGradient("L2oDmlstmStep")(_forward_only)
tf.RegisterGradient("L2oAdafacMlpStep")(_forward_only)

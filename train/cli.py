"""What every binary shares: a quiet TensorFlow import, one-line errors, ``--help`` that exits 0.

Import this module before TensorFlow, Keras or l2o_tf in a binary: it imports TensorFlow
with its C++ start-up lines (oneDNN, CUDA probing, absl's pre-init notice) hidden, unless
``--tf_logs`` is on the command line or ``TF_CPP_MIN_LOG_LEVEL`` is already set.  A binary
then calls :func:`run`, which parses the flags and turns every bad input into one
``error: ...`` line on stderr with exit status 2.  Python-side INFO logs (TensorFlow's
checkpoint writer, tfds) are hidden unless ``--verbosity`` (``-v``) is given.
"""

import dataclasses
import json
import os
import sys
import tempfile
import warnings

TF_LOGS_FLAG = "tf_logs"


def _wants_tf_logs(argv):
    return any(a in (f"--{TF_LOGS_FLAG}", f"--{TF_LOGS_FLAG}=true", f"--{TF_LOGS_FLAG}=1") for a in argv[1:])


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 sent to a temporary file; show it only if the import fails."""
    if _wants_tf_logs(sys.argv) or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow  # noqa: F401, PLC0415

        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401, PLC0415
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    import tensorflow as tf  # noqa: PLC0415

    tf.get_logger().setLevel("ERROR")  # e.g. the SavedModel writer's INFO lines on renamed inputs


_import_tensorflow_quietly()

from absl import app, flags, logging  # noqa: E402

from l2o_tf.data import GET_FULL_MNIST, SubsetWarning  # noqa: E402

flags.DEFINE_boolean(TF_LOGS_FLAG, False, "Show TensorFlow's C++ log lines (hidden by default).")
# The binaries print the subset notice in their own output, once.
warnings.simplefilter("ignore", SubsetWarning)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError)


def _fail(message):
    logging.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run(main_fn, required=()):
    """Parse the flags and call ``main_fn(argv)``; bad input ends in one ``error:`` line, exit 2.

    ``required``: flag names that must be given; ``--help`` marks them and exits 0.
    """
    for name in required:
        flags.FLAGS[name].help += " (required)"

    def parse(argv):
        if any(a in ("--help", "-h", "-?", "--helpshort", "--helpfull") for a in argv[1:]):
            doc = (sys.modules[main_fn.__module__].__doc__ or "").strip()
            print(doc + "\n\nflags:\n" + flags.FLAGS.module_help(main_fn.__module__) + "\n"
                  + flags.FLAGS.module_help(__name__))
            sys.exit(0)
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as e:
            _fail(f"{e} (see --help)")
        if not flags.FLAGS["verbosity"].present:  # the binaries print what a user needs; -v 0 shows INFO logs
            logging.set_verbosity(logging.WARNING)
        missing = [f"--{name}" for name in required if flags.FLAGS[name].value in (None, [])]
        if missing:
            _fail(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (see --help).")
        if len(rest) > 1:
            _fail(f"unexpected arguments {rest[1:]}; flags look like --name=value.")
        return rest

    def wrapped(argv):
        try:
            return main_fn(argv)
        except USER_ERRORS as e:
            _fail(e)

    app.run(wrapped, flags_parser=parse)


def _default(field):
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def define_config_flags(config_cls, module_name):
    """One absl flag per option of ``config_cls`` (e.g. ``MetaTrainConfig``): its name, type, default,
    help and choices all come from the dataclass field, so an option is written once.
    ``module_name``: the binary's ``__name__`` (``--help`` lists the flags under it)."""
    for name, (_, field) in config_cls.fields().items():
        default, help_text, choices = _default(field), field.metadata["help"], field.metadata.get("choices")
        where = {"module_name": module_name}
        if choices:
            flags.DEFINE_enum(name, default, list(choices), help_text, **where)
        elif isinstance(default, bool):
            flags.DEFINE_boolean(name, default, help_text, **where)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text, **where)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help_text, **where)
        elif isinstance(default, str):
            flags.DEFINE_string(name, default, help_text, **where)
        elif isinstance(default, tuple):
            flags.DEFINE_list(name, [str(v) for v in default], help_text, **where)
        elif isinstance(default, dict):
            define_kwargs_flag(name, help_text, default, module_name=module_name)
        else:
            raise TypeError(f"{config_cls.__name__}.{name}: no flag type for a {type(default).__name__} default.")


def define_seed_offset_flag(module_name):
    """``--seed_offset``: the first optimizee seed of an evaluation (evaluate, adapt)."""
    from l2o_tf import seeds  # noqa: PLC0415

    flags.DEFINE_integer(
        "seed_offset", seeds.EVALUATION,
        f"First optimizee seed. The default ({seeds.EVALUATION}) gives the evaluation optimizees; {seeds.VALIDATION} "
        "gives the meta-training validation optimizees, for choosing runs or hyperparameters without touching "
        "the evaluation ones.", module_name=module_name)


def config_from_flags(config_cls, **overrides):
    """The ``config_cls`` the command line describes (flags from :func:`define_config_flags`)."""
    values = {}
    for name, (_, field) in config_cls.fields().items():
        value, default = flags.FLAGS[name].value, _default(field)
        if isinstance(default, tuple):
            item = field.metadata["item"]
            try:
                value = tuple(item(v) for v in value)
            except ValueError:
                raise ValueError(f"--{name}: {','.join(value)!r} is not a list of {item.__name__} values.") from None
        elif isinstance(default, dict):
            value = parse_kwargs(value, name)
        values[name] = value
    values.update(overrides)
    return config_cls.from_flat(**values)


# Added to a plot's title when its results come from a subset.
def subset_title(*notices):
    """The plot-title line for ``notices`` (from :func:`subset_notice`): which subset, or nothing."""
    notices = [n for n in notices if n]
    if any("BUNDLED MNIST SUBSET" in n for n in notices):
        return "\nBUNDLED MNIST SUBSET, not the full data set"
    return "\nSOME DATA ARE SUBSETS of their data sets (see data_notice)" if notices else ""


def subset_notice(dataset_or_source):
    """The one notice a binary prints (and writes into its JSON and plot) when results come from a subset."""
    source = getattr(dataset_or_source, "source", dataset_or_source)
    if not source or "SUBSET" not in str(source) and not str(source).startswith("bundled subset"):
        return None
    if str(source).startswith("bundled subset"):
        return ("NOTE: RESULTS ON THE BUNDLED MNIST SUBSET (6,000 train / 1,000 test images), not the full "
                "data set: they are not comparable with full-MNIST results. " + GET_FULL_MNIST)
    return f"NOTE: RESULTS ON A SUBSET of the data set ({source})."


def define_kwargs_flag(name, help_text, default=None, module_name=None, flag_values=flags.FLAGS):
    """A ``key=value`` flag that may be repeated: ``--rule_kwargs=a=1,b=2`` and
    ``--rule_kwargs=a=1 --rule_kwargs=b=2`` mean the same (a plain list flag would keep only the
    last occurrence, silently dropping the others). Read it with :func:`parse_kwargs`."""
    flags.DEFINE_multi_string(name, [f"{k}={v}" for k, v in (default or {}).items()],
                              help_text + " Repeat the flag or separate pairs by commas.", module_name=module_name,
                              flag_values=flag_values)


def parse_kwargs(items, flag):
    """``["sigma=100,dim=10"]`` or ``["sigma=100", "dim=10"]`` -> ``{"sigma": 100.0, "dim": 10}``
    (JSON values, else strings). A key given twice with different values is an error."""
    out = {}
    for item in [part for occurrence in items or [] for part in occurrence.split(",") if part]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{flag}: {item!r} is not key=value.")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        if key in out and out[key] != value:
            raise ValueError(f"--{flag}: {key} is given twice ({out[key]!r} and {value!r}).")
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

"""Optimizer specs as the binaries take them: a shipped name, a directory, or ``adam:lr=1e-3``.

A learned optimizer takes a step scale the same way, ``general:lr=0.25`` or ``runs/x:lr=0.5``: its updates times
that factor (``LearnedOptimizer(learning_rate=...)``), so that a study can tune it on validation as it tunes Adam's.
"""

from l2o_tf import pretrained, rules

_ALIASES = {"lr": "learning_rate", "b1": "beta_1", "b2": "beta_2", "eps": "epsilon", "mom": "momentum"}
HAND_DESIGNED = ("adam", "sgd")


def rule_from_spec(spec):
    """Resolve ``spec`` to an update rule.

    ``adam:lr=3e-3``, ``sgd:lr=0.1:momentum=0.9`` build hand-designed rules; anything
    else is a shipped optimizer name or a meta-training ``out_dir``.
    """
    name, _, rest = str(spec).partition(":")
    if name.lower() in HAND_DESIGNED:
        kwargs = {}
        for item in filter(None, rest.split(":")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"Bad optimizer spec {spec!r}: {item!r} is not key=value (e.g. adam:lr=1e-3).")
            key = _ALIASES.get(key, key)
            try:
                kwargs[key] = value.lower() == "true" if value.lower() in ("true", "false") else float(value)
            except ValueError:
                raise ValueError(f"Bad optimizer spec {spec!r}: {value!r} is not a number.") from None
        if "learning_rate" not in kwargs:
            raise ValueError(f"Bad optimizer spec {spec!r}: give its learning rate, e.g. {name.lower()}:lr=1e-3 "
                             "(a hand-designed rule has no sensible default).")
        try:
            return rules.get(name, **kwargs)
        except (TypeError, ValueError) as e:  # Keras layers reject unknown keywords with ValueError
            raise ValueError(f"Bad optimizer spec {spec!r}: {e}") from None
    base, scale = split_step_scale(spec)
    rule = pretrained.load_rule(base)
    if scale is None:
        return rule
    try:
        return pretrained.with_step_scale(rule, scale)
    except ValueError as e:
        raise ValueError(f"Bad optimizer spec {spec!r}: {e}") from None


def split_step_scale(spec):
    """``("runs/x", 0.5)`` for a learned spec ``"runs/x:lr=0.5"``; ``(spec, None)`` without a step scale or for
    a hand-designed spec (whose ``lr`` is its learning rate, not a scale)."""
    spec = str(spec)
    head, sep, tail = spec.rpartition(":")
    key, _, value = tail.partition("=")
    if not sep or spec.partition(":")[0].lower() in HAND_DESIGNED or key not in ("lr", "learning_rate"):
        return spec, None
    try:
        return head, float(value)  # with_step_scale checks that it is > 0
    except ValueError:
        raise ValueError(f"Bad optimizer spec {spec!r}: {value!r} is not a number.") from None


def provenance(spec):
    """:func:`l2o_tf.pretrained.provenance` of a learned spec's weights (its step scale aside); ``None`` for a
    hand-designed rule, which has no weights."""
    if str(spec).partition(":")[0].lower() in HAND_DESIGNED:
        return None
    return pretrained.provenance(split_step_scale(spec)[0])

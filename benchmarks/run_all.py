r"""Run every benchmark and merge their JSON: python -m benchmarks.run_all --output results/benchmarks.json"""

import json
import os
import subprocess
import sys

from absl import app, flags

from benchmarks.timing import machine

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Where to write the merged JSON.")
flags.DEFINE_list("only", [], "Run only these benchmarks (merged into an existing --output).")

BENCHMARKS = ["matmul_gflops", "rule_flop_fraction", "fit_step_ms", "meta_train_steps_per_s", "meta_train_native_vs_tf",
              "estimator_steps_per_s",
              "pytorch_l2l", "regularizer_overhead"]


def ratios(merged):
    """The issue's targets as ratios of figures measured in this one run (absent figures are left out)."""
    out = {}
    meta, torch = merged.get("meta_train_steps_per_s", {}), merged.get("pytorch_l2l", {})
    if "l2o_tf_over_pytorch_in_turns" in torch:  # timed in turns (two processes): drift cancels
        out["dmlstm_meta_training_vs_pytorch_eager"] = torch["l2o_tf_over_pytorch_in_turns"]
    elif "dmlstm_optimizee_steps_per_s" in meta and "optimizee_steps_per_s" in torch:
        best = max(meta["dmlstm_optimizee_steps_per_s"], meta.get("dmlstm_xla_optimizee_steps_per_s", 0))
        out["dmlstm_meta_training_vs_pytorch_eager"] = best / torch["optimizee_steps_per_s"]
    if "regularizer_overhead" in merged:
        out["hessian_trace_1_probe_over_vanilla"] = merged["regularizer_overhead"]["hessian_trace_1_probe_ratio"]
    flops, fit = merged.get("rule_flop_fraction", {}), merged.get("fit_step_ms", {}).get("conv_1m", {})
    if "rnnprop" in flops and "keras_adam" in fit:
        # The fit target: the fastest fused RNNprop step over (its rule FLOPs at the matmul bound + Adam's step).
        bound_ms = 1000 * flops["rnnprop"]["flops_per_coordinate"] * fit["keras_adam"]["parameters"] / (
            flops["matmul_gflops"] * 1e9) + fit["keras_adam"]["ms"]
        fused = [v["ms"] for k, v in fit.items() if k.startswith("rnnprop_fused")]
        if fused:
            out["rnnprop_fused_fit_over_bound"] = min(fused) / bound_ms
    for rule in ("", "rnnprop", "dmlstm"):  # all entries, then per rule
        entries = [v for k, v in flops.items() if isinstance(v, dict) and k.startswith(rule)]
        for key, name in (("fraction_of_matmul", "best_rule_flop_fraction"),
                          ("max_fraction_of_matmul", "rule_flop_fraction_activation_bound")):
            values = [v[key] for v in entries if key in v]
            if values:
                out[f"{rule}_{name}" if rule else name] = max(values)
    return out


def main(argv):
    merged = {}
    if FLAGS.only and FLAGS.output and os.path.exists(FLAGS.output):
        with open(FLAGS.output) as f:
            merged = json.load(f)
    merged["machine"] = machine()  # each benchmark's line records it too
    for name in FLAGS.only or BENCHMARKS:
        result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], capture_output=True, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if result.returncode != 0:
            raise SystemExit(f"benchmark {name} failed:\n{result.stderr[-2000:]}")
        merged.update(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps({name: merged[name]}))
    merged["ratios"] = ratios(merged)
    print(json.dumps({"ratios": merged["ratios"]}))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(merged, f, indent=1)


if __name__ == "__main__":
    app.run(main)

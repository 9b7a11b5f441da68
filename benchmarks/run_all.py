r"""Run every benchmark and merge their JSON: python -m benchmarks.run_all --output results/benchmarks.json"""

import json
import os
import platform
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Where to write the merged JSON.")
flags.DEFINE_list("only", [], "Run only these benchmarks.")

BENCHMARKS = ["matmul_gflops", "rule_flop_fraction", "fit_step_ms"]


def main(argv):
    merged = {"machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()}}
    for name in FLAGS.only or BENCHMARKS:
        result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], capture_output=True, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if result.returncode != 0:
            raise SystemExit(f"benchmark {name} failed:\n{result.stderr[-2000:]}")
        merged.update(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps({name: merged[name]}))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(merged, f, indent=1)


if __name__ == "__main__":
    app.run(main)

"""Speed and memory measurements that print JSON (never timed tests): python -m benchmarks.run_all."""

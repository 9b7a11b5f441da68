"""The comparison point of meta_train_steps_per_s: a straightforward eager-mode PyTorch L2L loop.

The same problem as ``MetaTrainer`` with ``--rule=dmlstm`` on ``mnist_mlp``:
a coordinatewise 2-layer LSTM(20) with L2L's log/sign preprocessing over all
15,910 coordinates of the 784-20-10 sigmoid MLP, batch 128, unroll 20,
first-order (optimizee gradients detached), meta-loss the mean of the losses
after each update, Adam 1e-3 with global-norm clip 1.  It is written the way
the public PyTorch L2L code is (one Python iteration per optimizee step,
``torch.autograd.grad`` for the optimizee gradient, ``backward`` for the
meta-gradient).  l2o_tf's loop, with XLA and with its native kernels, is timed in
turns with it, each in its own process (see :func:`measure`); the headline ratio
is the faster configuration's.  Needs ``pip install torch==2.13.0``; prints
``{"pytorch_l2l": {"skipped": ...}}`` without it.
"""

import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.timing import emit


class PyTorchL2L:
    """The L2L loop, set up and warmed up once; further meta steps are timed on request."""

    def __init__(self, torch, warmup=2, unroll=20, batch_size=128, hidden=20):
        from l2o_tf import data  # noqa: PLC0415

        torch.manual_seed(0)
        mnist = data.load("mnist")
        x_all = torch.tensor(mnist.x_train.reshape(len(mnist.x_train), -1), dtype=torch.float32) / 255.0
        y_all = torch.tensor(mnist.y_train, dtype=torch.long)
        shapes = [(784, 20), (20,), (20, 10), (10,)]
        sizes = [math.prod(s) for s in shapes]

        def init_params():
            w1 = torch.randn(784, 20) * math.sqrt(2.0 / (784 + 20))
            w2 = torch.randn(20, 10) * math.sqrt(2.0 / (20 + 10))
            return torch.cat([w1.reshape(-1), torch.zeros(20), w2.reshape(-1), torch.zeros(10)])

        def loss_fn(flat, x, y):
            w1, b1, w2, b2 = (p.reshape(s) for p, s in zip(torch.split(flat, sizes), shapes))
            logits = torch.sigmoid(x @ w1 + b1) @ w2 + b2
            return torch.nn.functional.cross_entropy(logits, y)

        def preprocess(g, k=5.0):
            large = g.abs() >= math.exp(-k)
            log_part = torch.where(large, g.abs().clamp_min(1e-30).log() / k, -torch.ones_like(g))
            sign_part = torch.where(large, g.sign(), math.exp(k) * g)
            return torch.stack([log_part, sign_part], dim=1)

        cells = torch.nn.ModuleList([torch.nn.LSTMCell(2, hidden), torch.nn.LSTMCell(hidden, hidden)])
        head = torch.nn.Linear(hidden, 1)
        meta_params = list(cells.parameters()) + list(head.parameters())
        meta_opt = torch.optim.Adam(meta_params, lr=1e-3)
        n = sum(sizes)

        def batch():
            index = torch.randint(0, len(x_all), (batch_size,))
            return x_all[index], y_all[index]

        def meta_step(flat, states):
            losses = []
            for t in range(unroll):
                flat = flat if flat.requires_grad else flat.requires_grad_()
                loss = loss_fn(flat, *batch())
                if t > 0:
                    losses.append(loss)
                (grad,) = torch.autograd.grad(loss, flat, retain_graph=True)
                inputs = preprocess(grad.detach())
                new_states = []
                for cell, (h, c) in zip(cells, states):
                    h, c = cell(inputs, (h, c))
                    new_states.append((h, c))
                    inputs = h
                states = new_states
                flat = flat + 0.01 * head(inputs).squeeze(1)
            losses.append(loss_fn(flat, *batch()))
            meta_loss = torch.stack(losses).mean()
            meta_opt.zero_grad()
            meta_loss.backward()
            torch.nn.utils.clip_grad_norm_(meta_params, 1.0)
            meta_opt.step()
            return flat.detach(), [(h.detach(), c.detach()) for h, c in states]

        self._meta_step = meta_step
        self._final_loss = lambda: float(loss_fn(self._flat, *batch()))
        self._flat = init_params()
        self._states = [(torch.zeros(n, hidden), torch.zeros(n, hidden)) for _ in cells]
        self.seconds_per_step(warmup)

    def seconds_per_step(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            self._flat, self._states = self._meta_step(self._flat, self._states)
        return (time.perf_counter() - start) / steps

    def final_loss_finite(self):
        return bool(np.isfinite(self._final_loss()))


class _L2OServer:
    """l2o_tf's DM-LSTM meta-training in its own process (``benchmarks.meta_step``), timed on request."""

    def __init__(self, variant):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.meta_step", "dmlstm", variant], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        while self.process.stdout.readline().strip() != "ready":
            if self.process.poll() is not None:
                raise RuntimeError(f"the l2o_tf meta-step server (benchmarks.meta_step dmlstm {variant}) exited")

    def seconds_per_step(self, steps):
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def measure(rounds=5, steps=15, unroll=20, threads=None, variants=("xla", "native")):
    """PyTorch's optimizee steps/s, and l2o_tf's DM-LSTM meta-training (the configurations of
    meta_train_steps_per_s: XLA, and the native kernels) timed in turns with it (torch, xla, native,
    torch, ...), each in its own process, so that the machine's drift falls on all alike: each ratio
    is the median over ``rounds`` of the ratios within a round."""
    try:
        import torch  # noqa: PLC0415  (optional: only this benchmark needs it)
    except ImportError:
        return {"skipped": "torch is not installed (pip install torch==2.13.0)"}

    if threads:
        torch.set_num_threads(threads)
    l2l = PyTorchL2L(torch, unroll=unroll)
    servers = {}
    try:
        for variant in variants:
            servers[variant] = _L2OServer(variant)
        torch_s, l2o_s = [], {variant: [] for variant in variants}
        for _ in range(rounds):
            torch_s.append(l2l.seconds_per_step(steps))
            for variant, server in servers.items():
                l2o_s[variant].append(server.seconds_per_step(steps))
    finally:
        for server in servers.values():
            server.close()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "unroll": unroll, "rounds": rounds,
           "steps_per_round": steps, "seconds_per_meta_step": statistics.median(torch_s),
           "optimizee_steps_per_s": unroll / statistics.median(torch_s), "final_loss_finite": l2l.final_loss_finite()}
    for variant, seconds in l2o_s.items():
        out[f"l2o_tf_dmlstm_{variant}_optimizee_steps_per_s_in_turns"] = unroll / statistics.median(seconds)
        out[f"l2o_tf_{variant}_over_pytorch_in_turns"] = statistics.median(t / l for t, l in zip(torch_s, seconds))
    out["l2o_tf_over_pytorch_in_turns"] = max(out[f"l2o_tf_{variant}_over_pytorch_in_turns"] for variant in variants)
    return out


if __name__ == "__main__":
    emit("pytorch_l2l", measure())

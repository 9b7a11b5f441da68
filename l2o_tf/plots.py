"""PNG plots of loss curves (mean and seed spread), written beside result JSON."""

import numpy as np


def plot_curves(curves, path, title, ylabel="training loss (minibatch)", log_y=True):
    """``curves``: ``{label: {"mean": [...], "std": [...]}}``; writes a PNG to ``path``."""
    import matplotlib  # noqa: PLC0415  (only the binaries need matplotlib)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in curves.items():
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        steps = np.arange(len(mean))
        ax.plot(steps, mean, label=label, linewidth=1.2)
        lower = np.maximum(mean - std, mean * 0.05) if log_y else mean - std
        ax.fill_between(steps, lower, mean + std, alpha=0.2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("optimizee step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

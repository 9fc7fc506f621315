"""Figures for the CLI's --plot options (matplotlib, headless). Never called while simulating."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sim.workload.stats import arrivals_per_minute


def plot_trace(frame: pd.DataFrame, path: Path, *, title: str) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    per_min = arrivals_per_minute(frame)
    axes[0].step(np.arange(per_min.size), per_min, where="post")
    axes[0].axhline(per_min.mean(), color="grey", ls="--", lw=1, label=f"mean {per_min.mean():.1f}")
    axes[0].set(xlabel="minute", ylabel="arrivals per minute", title="load")
    axes[0].legend()
    for ax, col in zip(axes[1:], ("prompt_tokens", "output_tokens"), strict=True):
        x = frame[col].to_numpy()
        bins = np.logspace(0, np.log10(max(x.max(), 2)), 50)
        ax.hist(x, bins=bins)
        ax.set_xscale("log")
        ax.set(xlabel=col.replace("_", " "), ylabel="requests", title=f"{col.split('_')[0]} length (mean {x.mean():.0f})")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

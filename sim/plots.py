"""Figures for the CLI's --plot options (matplotlib, headless). Never called while simulating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sim.workload.stats import arrivals_per_minute


def plot_trace(frame: pd.DataFrame, path: Path, *, title: str) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    counts, width_s = arrivals_per_minute(frame)
    per_min = counts * 60.0 / width_s
    axes[0].step(np.arange(per_min.size) * width_s / 60.0, per_min, where="post")
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


def plot_run(result: Any, path: Path) -> Path:
    """Arrivals per minute, replicas by state and TTFT over the run (a `SimResult`)."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True, constrained_layout=True)
    t = result.timeline
    counts, width_s = arrivals_per_minute(result.requests)
    axes[0].step(np.arange(counts.size) * width_s, counts / width_s, where="post", label="arrivals")
    axes[0].set(ylabel="requests / s", title="load")
    states = ["replicas_ready", "replicas_loading", "replicas_provisioning", "replicas_draining"]
    if len(t):
        axes[1].stackplot(t["t_s"], *(t[c] for c in states), labels=[c.removeprefix("replicas_") for c in states], step="post")
        axes[1].legend(loc="upper left", fontsize=8)
    else:
        axes[1].text(0.5, 0.5, "the run ended before the first timeline sample", ha="center", transform=axes[1].transAxes)
    axes[1].set(ylabel="replicas", title="replicas by state")
    r = result.requests
    done = r[r["status"] == "completed"]
    axes[2].scatter(done["arrival_at_s"], (done["first_token_at_s"] - done["arrival_at_s"]) * 1000, s=2, alpha=0.4)
    axes[2].set(yscale="log", ylabel="TTFT (ms)", xlabel="time (s)", title="time to first token, by arrival")
    slo = result.scenario["slo"]["ttft_ms"]
    if slo:
        axes[2].axhline(slo, color="red", lw=1, ls="--", label=f"SLO {slo:g} ms")
        axes[2].legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

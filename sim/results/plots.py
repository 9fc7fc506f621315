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


def pyplot() -> Any:
    """matplotlib.pyplot on the headless backend."""
    return plt


FONT: Any = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10, "figure.titlesize": 13}
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # legends beside the data


def _figures(text: str | None, fmt: str) -> str:
    return "n/a" if text is None else fmt.format(text)


def trace_figure(frame: pd.DataFrame, *, title: str) -> Any:
    """Per-minute load and the two length histograms; the title carries the trace's figures."""
    from sim.workload.stats import describe

    stats = describe(frame)
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
        counts, width_s = arrivals_per_minute(frame)
        per_min = counts * 60.0 / width_s
        axes[0].step(np.arange(per_min.size) * width_s / 60.0, per_min, where="post", label="arrivals")
        axes[0].axhline(per_min.mean(), color="grey", ls="--", lw=1, label=f"mean {per_min.mean():.1f}")
        axes[0].set(xlabel="minute", ylabel="arrivals per minute", title="load")
        axes[0].legend(**OUTSIDE)
        for ax, col in zip(axes[1:], ("prompt_tokens", "output_tokens"), strict=True):
            x = frame[col].to_numpy()
            bins = np.logspace(0, np.log10(max(x.max(), 2)), 50)
            ax.hist(x, bins=bins)
            ax.set_xscale("log")
            ax.set(xlabel=col.replace("_", " "), ylabel="requests", title=f"{col.split('_')[0]} length (mean {x.mean():.0f})")
        fig.suptitle(
            f"{title}: {stats['requests']:,} requests, {_figures(stats['mean_rate_per_s'], '{:.2f}')} req/s, "
            f"inter-arrival CV {_figures(stats['iat_cv'], '{:.2f}')}, per-minute peak/mean {stats['peak_to_mean_per_min']:.2f}"
        )
    return fig


def plot_trace(frame: pd.DataFrame, path: Path, *, title: str) -> Path:
    fig = trace_figure(frame, title=title)
    save(fig, path)
    return path


def save(fig: Any, path: Path) -> None:
    """Write a figure through a temporary file (a failed or interrupted write leaves no half image), then close it."""
    from sim.atomic import atomic_file

    try:
        with atomic_file(Path(path), "--plot") as tmp:
            fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".").lower())
    finally:
        plt.close(fig)


def loss_instants(replicas: pd.DataFrame) -> dict[str, np.ndarray]:
    """When replicas were lost: a failure at its release, a reclaim at its notice (its drain, or its release when it
    was still starting)."""
    if "interrupted" not in replicas.columns:
        return {"failure": np.array([]), "reclaim": np.array([])}
    how = replicas["interrupted"].astype(str).to_numpy()
    end = replicas["released_at_s"].to_numpy(dtype=np.float64)
    notice = np.where(
        np.isnan(replicas["drain_at_s"].to_numpy(dtype=np.float64)), end, replicas["drain_at_s"].to_numpy(dtype=np.float64)
    )
    return {"failure": np.sort(end[how == "failure"]), "reclaim": np.sort(notice[how == "reclaim"])}


def replicas_by_state(ax: Any, timeline: pd.DataFrame, replicas: pd.DataFrame | None = None) -> None:
    """The timeline's replicas as stacked states (legend beside the axes), with the instants replicas were lost to a
    failure or a reclaim marked on it."""
    states = ["replicas_ready", "replicas_loading", "replicas_provisioning", "replicas_draining"]
    if len(timeline):
        labels = [c.removeprefix("replicas_") for c in states]
        ax.stackplot(timeline["t_s"], *(timeline[c] for c in states), labels=labels, step="post")
        lost = loss_instants(replicas) if replicas is not None else {}
        for (what, at), (marker, color) in zip(lost.items(), (("x", "black"), ("v", "crimson")), strict=False):
            if len(at):
                ax.plot(
                    at,
                    np.zeros(len(at)),
                    linestyle="none",
                    marker=marker,
                    color=color,
                    markersize=8,
                    clip_on=False,
                    label=f"{what} ({len(at)})",
                )
        ax.legend(**OUTSIDE)
    else:
        ax.text(0.5, 0.5, "the run ended before the first timeline sample", ha="center", transform=ax.transAxes)
    ax.set(ylabel="replicas", title="replicas by state")


def run_title(result: Any, summary: dict[str, Any]) -> str:
    """The run in one line: scenario, fleet and the figures a reader looks for first."""
    name = f"{summary['scenario']}: " if summary.get("scenario") else ""
    p99 = summary["p99_ttft_ms"]
    usd = summary["usd_per_1k_tokens"]
    util = summary["throughput_utilization"]
    busy = summary["gpu_time_utilization"]
    figures = [
        f"p99 TTFT {p99 / 1000:.2f} s" if p99 is not None else "p99 TTFT n/a",
        f"${usd:.5f} per 1K tokens" if usd is not None else "$/1K n/a",
        f"throughput utilization {util:.0%}" if util is not None else "throughput utilization n/a",
        f"GPU time busy {busy:.0%}" if busy is not None else "GPU time busy n/a",
    ]
    return f"{name}{result.meta['model']}, {summary['fleet']}\n" + "; ".join(figures)


def run_figure(result: Any, summary: dict[str, Any] | None = None) -> Any:
    """Arrivals per minute, replicas by state and TTFT over the run (a `SimResult`), titled with its figures."""
    summary = summary if summary is not None else result.summary()
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(3, 1, figsize=(12, 10), sharex=True, constrained_layout=True)
        t = result.timeline
        counts, width_s = arrivals_per_minute(result.requests)
        axes[0].step(np.arange(counts.size) * width_s, counts / width_s, where="post", label="arrivals")
        axes[0].set(ylabel="requests / s", title="load")
        axes[0].legend(**OUTSIDE)
        replicas_by_state(axes[1], t, result.replicas)
        r = result.requests
        done = r[r["status"] == "completed"]
        axes[2].scatter(
            done["arrival_at_s"], (done["first_token_at_s"] - done["arrival_at_s"]) * 1000, s=3, alpha=0.4, label="requests"
        )
        axes[2].set(yscale="log", ylabel="TTFT (ms)", xlabel="time (s)", title="time to first token, by arrival")
        slo = result.scenario["slo"]["ttft_ms"]
        if slo:
            axes[2].axhline(slo, color="red", lw=1, ls="--", label=f"SLO {slo:g} ms")
        axes[2].legend(**OUTSIDE)
        fig.suptitle(run_title(result, summary))
    return fig


def plot_run(result: Any, path: Path, summary: dict[str, Any] | None = None) -> Path:
    fig = run_figure(result, summary)
    save(fig, path)
    return path


def validation_figure(real: dict[str, np.ndarray], sim: dict[str, np.ndarray], series: pd.DataFrame | None, *, title: str) -> Any:
    """Measured vs simulated: the CDF of each latency (ms) side by side, and the running / waiting / KV-use series."""
    names = [m for m in ("ttft", "tpot", "itl", "e2e") if m in real and m in sim]
    n_plots = len(names) + (3 if series is not None else 0)
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, n_plots, figsize=(4.2 * n_plots, 4.0), constrained_layout=True, squeeze=False)
        for ax, m in zip(axes[0], names, strict=False):
            for label, values, style in (("real", real[m], "-"), ("fleetsim", sim[m], "--")):
                v = np.sort(np.asarray(values, dtype=np.float64)) * 1e3
                ax.plot(v, np.arange(1, v.size + 1) / v.size, style, label=label)
            ax.set_xlabel(f"{m.upper()} (ms)")
            ax.set_ylabel("share of requests" if m != "itl" else "share of gaps")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        if series is not None:
            for ax, col, label in zip(
                axes[0][len(names) :], ("running", "waiting", "kv_use"), ("running", "waiting", "KV cache in use"), strict=True
            ):
                ax.plot(series["t_s"], series[f"real_{col}"], "-", label="real")
                ax.plot(series["t_s"], series[f"sim_{col}"], "--", label="fleetsim")
                ax.set_xlabel("time (s)")
                ax.set_ylabel(label)
                ax.grid(alpha=0.3)
                ax.legend(loc="best")
        fig.suptitle(title)
    return fig

"""A run as one self-contained HTML page: the scenario in words, the summary, latency CDFs with the SLOs,
the timeline, GPU-seconds and dollars by state, the three utilizations side by side and $/1K tokens next
to an API's prices. Figures are inline PNGs (base64) with alt text, the CSS is inline, there is no
script: the file opens anywhere without a network. Reads records only (a `SimResult`).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from sim.physics.prices import api_price
from sim.results.platform import PlatformResult
from sim.results.plots import FONT, OUTSIDE, pyplot, replicas_by_state
from sim.results.result import SimResult
from sim.workload.stats import describe
from sim.workload.transforms import describe_trace

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 1.5em auto;
       padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; } caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; } th[scope=row] { text-align: left; font-weight: normal; }
thead th { background: #f3f3f3; } img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
.side { display: flex; flex-wrap: wrap; gap: 1.5em; } .note { color: #555; font-size: .92em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, fmt: str = "{:,.2f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _pct(x: Any) -> str:
    return _num(x, "{:.1%}")


def _figure(fig: Any, alt: str) -> str:
    plt = pyplot()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(caption: str, head: list[str], rows: list[list[str]], ident: str) -> str:
    th = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    body = "".join(
        "<tr>" + f'<th scope="row">{_e(r[0])}</th>' + "".join(f"<td>{_e(c)}</td>" for c in r[1:]) + "</tr>" for r in rows
    )
    return f'<table id="{ident}"><caption>{_e(caption)}</caption><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def scenario_words(result: SimResult, summary: dict[str, Any]) -> str:
    sc, meta = result.scenario, result.meta
    trace = describe(result.requests)  # (in arrival order, as the trace)
    slo = {k.removesuffix("_ms"): v for k, v in sc["slo"].items() if v is not None}
    slo_words = ", ".join(f"{k.upper()} ≤ {v:g} ms" for k, v in slo.items()) or "none"
    source = describe_trace(sc["trace"]) if sc.get("trace") is not None else "batch jobs only"  # the trace as run
    return (
        f"{_e(meta['model'])} served by {_e(summary['fleet'])} (router {_e(sc['fleet']['router'])}, engine policy "
        f"{_e(meta['engine_policy'])}); trace {_e(source)}: {trace['requests']:,} requests at {_num(trace['mean_rate_per_s'])} req/s "
        f"(inter-arrival CV {_num(trace['iat_cv'])}, busiest minute {trace['peak_to_mean_per_min']:.2f}x the mean), mean "
        f"prompt {trace['prompt_tokens_mean']:,.0f} and output {trace['output_tokens_mean']:,.0f} tokens; SLOs: "
        f"{_e(slo_words)}; seed {meta['seed']}.{_frontend_words(sc)}"
    )


def _frontend_words(sc: dict[str, Any]) -> str:
    """The serving stack's fixed latency, where the scenario sets one (`roofline.frontend_latency_s`): every TTFT and
    E2E in the report holds it."""
    latency = (sc.get("roofline") or {}).get("frontend_latency_s") or 0.0
    if not latency:
        return ""
    return (
        f" Each request reaches the engine {latency * 1000:,.4g} ms after it arrives (roofline.frontend_latency_s: the "
        "serving stack's HTTP server, tokenizer and network), so every TTFT and E2E below holds it."
    )


def _latencies(done: Any) -> dict[str, np.ndarray]:
    """TTFT, TPOT (requests of more than one token) and E2E latency of completed requests, in ms."""
    out = done["output_tokens"].to_numpy()
    return {
        "TTFT": (done["first_token_at_s"] - done["arrival_at_s"]).to_numpy() * 1000,
        "TPOT": ((done["completed_at_s"] - done["first_token_at_s"]) / np.maximum(out - 1, 1)).to_numpy()[out > 1] * 1000,
        "E2E latency": (done["completed_at_s"] - done["arrival_at_s"]).to_numpy() * 1000,
    }


def _cdfs(result: SimResult, summary: dict[str, Any]) -> str:
    """The latency CDFs with the SLOs; with batch work, interactive requests' curves carry the SLO and batch
    requests' are drawn apart (dashed: they answer to their job's deadline, not to the SLO)."""
    plt = pyplot()

    r = result.requests
    done = r[r["status"] == "completed"]
    batch = done["klass"].astype("string").to_numpy() == "batch" if "klass" in done.columns else np.zeros(len(done), bool)
    curves = {"interactive requests" if batch.any() else "": _latencies(done[~batch])}
    if batch.any():
        curves["batch requests (no SLO)"] = _latencies(done[batch])
    slo = result.scenario["slo"]
    limits = {"TTFT": slo["ttft_ms"], "TPOT": slo["tpot_ms"], "E2E latency": slo["e2el_ms"]}
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
        for ax, name in zip(axes, limits, strict=True):
            for (who, series), style in zip(curves.items(), ({}, {"ls": "--", "color": "0.45"}), strict=False):
                x = series[name]
                if x.size:
                    xs = np.sort(x)
                    ax.step(
                        xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=f"{name}, {who}" if who else name, **style
                    )
                    ax.set_xscale("log")
            if limits[name]:
                ax.axvline(limits[name], color="red", ls="--", lw=1, label=f"SLO {limits[name]:g} ms")
            ax.set(xlabel=f"{name} (ms)", ylabel="share of requests", title=f"{name} CDF", ylim=(0, 1.02))
            if ax.get_legend_handles_labels()[0]:  # (no completed request and no SLO: nothing to label)
                ax.legend(loc="lower right")
    shown = (summary.get("by_class") or {}).get("interactive", summary) if batch.any() else summary
    whose = "interactive requests' " if batch.any() else ""
    alt = (
        f"Cumulative distributions of {whose}TTFT (p99 {_num(shown['p99_ttft_ms'], '{:,.0f}')} ms), TPOT (p99 "
        f"{_num(shown['p99_tpot_ms'], '{:,.1f}')} ms) and end-to-end latency (p99 {_num(shown['p99_e2el_ms'], '{:,.0f}')} ms), "
        "each with its SLO marked where one is set"
        + ("; batch requests' curves dashed, apart from the SLO." if batch.any() else ".")
    )
    return _figure(fig, alt)


def _timeline(result: SimResult) -> str:
    plt = pyplot()

    t = result.timeline
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(5, 1, figsize=(12, 11), sharex=True, constrained_layout=True)
        replicas_by_state(axes[1], t, result.replicas)
        if len(t):
            x = t["t_s"]
            axes[0].step(x, t["arrival_rate_per_s"], where="post", label="arrivals")
            axes[2].step(x, t["waiting"], where="post", label="waiting")
            axes[2].step(x, t["running"], where="post", label="running")
            axes[3].step(x, t["kv_use"], where="post", label="KV cache in use")
            axes[4].step(x, t["busy_fraction"], where="post", label="busy fraction")
            for ax in (axes[0], *axes[2:]):
                ax.legend(**OUTSIDE)
        for ax, title in zip(
            axes,
            ("arrival rate (req/s)", "replicas by state", "requests waiting and running", "KV cache use", "busy fraction"),
            strict=True,
        ):
            ax.set_title(title)
        axes[-1].set_xlabel("time (s)")
    alt = (
        f"Timeline over {result.horizon_s:,.0f} s: arrival rate, replicas by state (at most "
        f"{int(t['replicas_ready'].max()) if len(t) else 0} ready), requests waiting and running, KV cache use and busy fraction."
    )
    return _figure(fig, alt)


def _gpus_held(result: PlatformResult, s: dict[str, Any]) -> str:
    """The cluster's view: GPUs held by each deployment over time, stacked, per GPU type, with its budget."""
    plt = pyplot()
    held = result.gpus_held()
    gpus = sorted(set(held["gpu"])) or ["-"]
    names = list(result.deployments)
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(len(gpus), 1, figsize=(12, 2.8 * len(gpus)), sharex=True, constrained_layout=True, squeeze=False)
        for ax, gpu in zip(axes[:, 0], gpus, strict=True):
            mine = held[held["gpu"] == gpu]
            if len(mine):
                t = np.append(mine["t_s"].to_numpy(), result.horizon_s)
                ys = [np.append(mine[n].to_numpy(), mine[n].to_numpy()[-1]) for n in names]
                ax.stackplot(t, ys, labels=names, step="post")
            budget = s["gpu_budget"].get(gpu)
            if budget is not None:
                ax.axhline(budget["gpus"], color="black", linestyle="--", linewidth=1, label="gpu_budget")
            ax.set_title(f"GPUs held, {gpu}")
            ax.legend(**OUTSIDE)
        axes[-1, 0].set_xlabel("time (s)")
    peaks = ", ".join(f"{g}: {row['peak_held']} of {row['gpus']}" for g, row in s["gpu_budget"].items())
    alt = f"GPUs held by each of {len(names)} deployments over {result.horizon_s:,.0f} s, stacked" + (
        f"; most held at once against the budget: {peaks}." if peaks else "."
    )
    return _figure(fig, alt)


def _breakdowns(s: dict[str, Any], meta: dict[str, Any] | None = None) -> list[str]:
    """Sections for what a run has beyond one pool of one class: request classes, batch jobs, pools (dedicated
    batch or disaggregated), KV transfers, prefix caching, LoRA adapters (`meta`: the run's, for their figures)."""
    out: list[str] = []
    if s.get("by_class"):
        rows = [
            [
                name,
                f"{rec['completed']:,} / {rec['requests']:,}",
                _num(rec["p99_ttft_ms"], "{:,.0f}"),
                _num(rec["p99_tpot_ms"], "{:,.1f}"),
                _pct(rec["slo_attainment"]),
            ]
            for name, rec in s["by_class"].items()
        ]
        for row in rows:  # batch work answers to its job's deadline (the jobs table), not to the interactive SLO
            if row[0] == "batch":
                row[-1] = "— (deadline)"
        out.append(
            _table(
                "Request classes",
                ["class", "completed / all", "p99 TTFT (ms)", "p99 TPOT (ms)", "within the SLO"],
                rows,
                "classes",
            )
        )
    if s.get("by_job"):
        rows = []
        for name, rec in s["by_job"].items():
            done = rec["completed_at_s"]
            verdict = "—" if rec["deadline_met"] is None else ("met" if rec["deadline_met"] else "missed")
            rows.append(
                [
                    name,
                    f"{rec['completed']:,} / {rec['requests']:,}",
                    "unfinished" if done is None else _num(done / 3600, "{:,.2f}"),
                    "—" if rec["deadline_at_s"] is None else _num(rec["deadline_at_s"] / 3600, "{:,.2f}"),
                    verdict,
                    _num((rec["late_s"] or 0) / 3600, "{:,.2f}"),
                    _num(rec["tokens_per_gpu_hour"], "{:,.0f}"),
                ]
            )
        out.append(
            _table(
                "Batch jobs",
                ["job", "completed / all", "finished (h)", "deadline (h)", "deadline", "late (h)", "tokens per GPU-hour"],
                rows,
                "jobs",
            )
        )
    if s.get("by_pool"):
        rows = [
            [
                name,
                str(rec["replicas_launched"]),
                _num(rec["billed_gpu_seconds"] / 3600, "{:,.3f}"),
                _pct(rec.get("gpu_time_utilization")),
                _num(rec["cost_usd"], "${:,.4f}"),
            ]
            for name, rec in s["by_pool"].items()
        ]
        out.append(_table("Pools", ["pool", "replicas launched", "GPU-hours", "GPU time busy", "USD"], rows, "pools"))
    if s.get("by_gpu"):
        rows = [
            [
                name,
                str(rec["replicas_launched"]),
                _num(rec["billed_gpu_seconds"] / 3600, "{:,.3f}"),
                _num(rec["cost_usd"], "${:,.4f}"),
            ]
            for name, rec in s["by_gpu"].items()
        ]
        out.append(_table("GPU types", ["GPUs per replica x type", "replicas launched", "GPU-hours", "USD"], rows, "gpus"))
    by = {k: rec for k, rec in (s.get("cost_by_capacity") or {}).items() if rec["replicas"] or rec["billed_gpu_seconds"]}
    if set(by) - {"on_demand"} or s.get("replicas_failed") or s.get("replicas_reclaimed") or s.get("launches_failed"):
        rows = [
            [
                k,
                str(rec["replicas"]),
                _num(rec["billed_gpu_seconds"] / 3600, "{:,.3f}"),
                _num(rec["usd_per_gpu_hour"], "${:,.4f}"),
                _num(rec["cost_usd"], "${:,.4f}"),
            ]
            for k, rec in by.items()
        ]
        out.append(_table("Capacity classes", ["class", "replicas", "GPU-hours", "per GPU-hour", "USD"], rows, "capacity"))
        cf = s.get("without_losses") or {}
        rows = [
            [
                f"{s['replicas_failed']} / {s['replicas_reclaimed']}",
                f"{s['requests_requeued']:,}",
                f"{s['tokens_recomputed']:,}",
                _num(s["gpu_seconds_lost"] / 3600, "{:,.3f}"),
                f"{s['launches_failed']:,}",
                _pct(s["availability"]),
                f"{_pct(s['slo_attainment'])} / {_pct(cf.get('slo_attainment'))}",
            ]
        ]
        head = [
            "failed / reclaimed",
            "re-queued",
            "tokens recomputed",
            "GPU-h lost",
            "launches failed",
            "availability",
            "within the SLO / without losses",
        ]
        out.append(_table("Capacity lost", head, rows, "losses"))
    if s.get("kv_transfers") is not None:
        rows = [
            ["wait for a decode replica with room", _num(s["mean_transfer_wait_ms"]), _num(s["p99_transfer_wait_ms"])],
            ["transfer (link queue and wire)", _num(s["mean_transfer_ms"]), _num(s["p99_transfer_ms"])],
        ]
        out.append(_table(f"KV transfers ({s['kv_transfers']:,})", ["", "mean (ms)", "p99 (ms)"], rows, "transfers"))
    if s.get("prefix_hit_rate_tokens") is not None:
        rows = [
            [
                _pct(s["prefix_hit_rate_tokens"]),
                _pct(s["prefix_hit_rate_blocks"]),
                f"{s['prefix_cached_tokens']:,}",
                f"{s['prefill_tokens_saved']:,}",
            ]
        ]
        out.append(
            _table(
                "Prefix cache",
                ["hit rate (tokens)", "hit rate (blocks)", "cached tokens", "prefill tokens saved"],
                rows,
                "prefix",
            )
        )
    lora = (meta or {}).get("lora")
    if lora is not None and s.get("lora_loads") is not None:
        rows = [
            [
                f"{lora['adapters_in_trace']:,} / {lora['requests_with_adapter']:,}",
                f"{lora['max_loras']} x rank {lora['max_lora_rank']} ({lora['adapter_bytes'] / 1e6:,.0f} MB each)",
                f"{s['lora_loads']:,}",
                _num(s["lora_load_s"], "{:,.2f}"),
            ]
        ]
        head = ["adapters / requests naming one", "GPU slots (max_loras)", "adapters loaded", "steps stalled by loads (s)"]
        out.append(_table("LoRA adapters", head, rows, "lora"))
    return ["<h2>Classes, jobs, pools and caches</h2>", *out] if out else []


def _latency_tables(s: dict[str, Any], classes: dict[str, dict[str, Any]]) -> list[str]:
    """The latency table; with batch work (`classes` given), one for interactive requests (the SLO's) and one for
    batch requests apart (inter-token gaps are recorded for all requests together, so ITL stays pooled)."""
    head = ["metric", "mean", "median", "p90", "p99"]
    keys = (("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E latency", "e2el"))

    def rows(rec: dict[str, Any]) -> list[list[str]]:
        return [[name, *(_num(rec[f"{stat}_{key}_ms"]) for stat in ("mean", "median", "p90", "p99"))] for name, key in keys]

    itl = ["ITL", *(_num(s[f"{stat}_itl_ms"]) for stat in ("mean", "median", "p90", "p99"))]
    if not classes:
        pooled = rows(s)
        return [_table("Latency (ms)", head, [*pooled[:2], itl, pooled[2]], "latency")]
    out = []
    if "interactive" in classes:
        out.append(_table("Latency of interactive requests (ms)", head, rows(classes["interactive"]), "latency"))
    out.append(
        _table("Latency of batch requests (ms; they answer to their deadline)", head, rows(classes["batch"]), "latency-batch")
    )
    out.append(_table("Inter-token latency, all requests (ms)", head, [itl], "itl"))
    return out


def _run_sections(result: SimResult, s: dict[str, Any]) -> list[str]:
    """A run's sections of its page: scenario, summary, latency, timeline, GPU time and cost, breakdowns."""
    meta = result.meta
    classes = s.get("by_class") or {}
    apart = "batch" in classes  # batch work: interactive latency and the SLO over interactive requests only
    latency_tables = _latency_tables(s, classes if apart else {})
    inter = classes.get("interactive") if apart else None
    summary_rows = [
        ["completed requests", f"{s['completed']:,}"],
        ["rejected requests", f"{s['rejected']:,}"],
        ["duration (s)", _num(s["duration"])],
        ["request throughput (req/s)", _num(s["request_throughput"])],
        ["output throughput (tok/s)", _num(s["output_throughput"])],
        (
            ["request goodput (req/s)", _num(s["request_goodput"])]
            if not apart
            else ["interactive goodput (req/s)", _num(None if inter is None else inter["request_goodput"])]
        ),
        (
            ["within the SLO", _pct(s["slo_attainment"])]
            if not apart
            else ["interactive within the SLO", _pct(None if inter is None else inter["slo_attainment"])]
        ),
        ["preemptions", f"{s['n_preemptions']:,}"],
        ["replicas launched / most ready", f"{s['replicas_launched']} / {s['replicas_max']}"],
    ]
    states = s["gpu_seconds_by_state"]
    billed = s["billed_gpu_seconds"]
    usd_per_s = s["cost_usd"] / billed if billed else 0.0
    state_rows = [
        [k, _num(v / 3600, "{:,.3f}"), _pct(v / billed if billed else None), _num(v * usd_per_s, "${:,.4f}")]
        for k, v in states.items()
    ]
    state_rows.append(["billed", _num(billed / 3600, "{:,.3f}"), _pct(1.0 if billed else None), _num(s["cost_usd"], "${:,.4f}")])
    util_rows = [
        [
            _pct(s["gpu_time_utilization"]),
            _pct(s["mfu"]),
            _pct(s["mbu"]),
            _pct(s["throughput_utilization"]),
        ]
    ]
    api = api_price(s["api"])
    price_rows = [
        [
            "this fleet",
            _num(s["usd_per_1k_prompt_tokens"], "${:.5f}"),
            _num(s["usd_per_1k_completion_tokens"], "${:.5f}"),
            _num(s["usd_per_1k_tokens"], "${:.5f}"),
        ],
        [
            f"{api.name} (API)",
            _num(api.usd_per_1k_prompt_tokens, "${:.5f}"),
            _num(api.usd_per_1k_completion_tokens, "${:.5f}"),
            "—",
        ],
    ]
    util_table = (
        '<table id="utilization"><caption>Three utilizations, side by side</caption><thead><tr>'
        '<th scope="col">GPU time busy</th><th scope="col">MFU</th><th scope="col">MBU</th><th scope="col">throughput utilization</th>'
        "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in util_rows)
        + "</tbody></table>"
    )
    extra = _breakdowns(s, meta)
    return [
        "<h2>Scenario</h2>",
        f'<p id="scenario">{scenario_words(result, s)}</p>',
        "<h2>Summary</h2>",
        '<div class="side">',
        _table("Requests and throughput", ["metric", "value"], summary_rows, "summary"),
        *latency_tables,
        "</div>",
        "<h2>Latency distributions</h2>",
        _cdfs(result, s),
        "<h2>Timeline</h2>",
        _timeline(result),
        "<h2>GPU time and cost</h2>",
        _table("GPU-hours and dollars by state", ["state", "GPU-hours", "share", "USD"], state_rows, "states"),
        util_table,
        _table("Dollars per 1K tokens", ["", "prompt", "completion", "all tokens"], price_rows, "prices"),
        *extra,
    ]


def _page(title: str, version: str, body: list[str]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">fleetsim {_e(version)}; a simulated run: every figure follows from the scenario and its seed.</p>',
        *body,
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_html(result: SimResult, summary: dict[str, Any] | None = None) -> str:
    """The page (a string); `summary` defaults to `result.summary()`."""
    s = summary if summary is not None else result.summary()
    title = f"{s.get('scenario') or 'fleetsim run'}: {result.meta['model']}, {s['fleet']}"
    return _page(title, result.meta["fleetsim_version"], _run_sections(result, s))


def render_platform_html(result: PlatformResult, summary: dict[str, Any] | None = None) -> str:
    """A platform's page: a table of its deployments and totals, its GPU budget, then a section per deployment (each
    what a run's own page shows, its headings a level down and its element ids prefixed with its name)."""
    s = summary if summary is not None else result.summary()
    per = s["deployments"]
    rows = []
    for name, d in per.items():
        meta = result.deployments[name].meta
        rows.append(
            [
                f'<a href="#deployment-{_e(name)}">{_e(name)}</a>',
                _e(f"{meta['model']}, {d['fleet']}"),
                f"{d['completed']:,} / {d['completed'] + d['rejected'] + d['in_flight']:,}",
                _num(d["p99_ttft_ms"]),
                _num(d["p99_tpot_ms"]),
                _pct(d["slo_attainment"]),
                _num(d["billed_gpu_seconds"] / 3600, "{:,.3f}"),
                _num(d["cost_usd"], "${:,.4f}"),
                _num(d["usd_per_1k_tokens"], "${:.5f}"),
                _pct(d["throughput_utilization"]),
            ]
        )
    rows.append(
        [
            "platform",
            "",
            f"{s['completed']:,} / {s['requests']:,}",
            "",
            "",
            _pct(s["slo_attainment"]),
            _num(s["billed_gpu_seconds"] / 3600, "{:,.3f}"),
            _num(s["cost_usd"], "${:,.4f}"),
            _num(s["usd_per_1k_tokens"], "${:.5f}"),
            _pct(s["throughput_utilization"]),
        ]
    )
    head = ["deployment", "model, fleet", "completed / all", "P99 TTFT (ms)", "P99 TPOT (ms)", "within the SLO"]
    head += ["GPU-hours", "USD", "USD per 1K tokens", "throughput utilization"]
    table = (
        '<table id="deployments"><caption>Deployments and the platform</caption><thead><tr>'
        + "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
        + "</tr></thead><tbody>"
        + "".join(f'<tr><th scope="row">{r[0]}</th>' + "".join(f"<td>{c}</td>" for c in r[1:]) + "</tr>" for r in rows)
        + "</tbody></table>"
    )
    held = s["launches_held_back"]
    budget_rows = [[gpu, f"{row['gpus']:,}", f"{row['peak_held']:,}"] for gpu, row in s["gpu_budget"].items()]
    body = ["<h2>Platform</h2>", table, _gpus_held(result, s)]
    if budget_rows:
        body.append(_table("GPU budget", ["GPU type", "GPUs", "most held at once"], budget_rows, "budget"))
        body.append(
            '<p class="note">Launch tries the budget held back: ' + _e(", ".join(f"{k} {v}" for k, v in held.items())) + ".</p>"
        )
    for name, run in result.deployments.items():
        section = "\n".join(_run_sections(run, per[name]))
        section = section.replace("<h2>", "<h3>").replace("</h2>", "</h3>").replace(' id="', f' id="{_e(name)}-')
        body += [f'<section id="deployment-{_e(name)}">', f"<h2>Deployment {_e(name)}</h2>", section, "</section>"]
    version = next(iter(result.deployments.values())).meta["fleetsim_version"]
    return _page(f"{s.get('scenario') or 'fleetsim platform'}: {len(per)} deployments", version, body)

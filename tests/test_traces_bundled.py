"""The bundled traces read, and `trace inspect` reproduces the figures in traces/README.md
(which match ../shared/traces/README.md: Azure conv 5.53 req/s, IAT CV 1.09)."""

from pathlib import Path

import pytest

from sim.workload import load_trace
from sim.workload.stats import describe

TRACES = Path(__file__).resolve().parents[1] / "traces"

EXPECTED = {
    # rate, IAT CV, peak/mean per minute, prompt mean/p50/p99, output mean/p50/p99
    "azure2023_conv.csv": (19_366, 5.53, 1.09, 1.54, (1155, 1020, 4142), (211, 129, 601)),
    "azure2023_code.csv": (8_819, 2.57, 13.2, 4.16, (2048, 1469, 7436), (28, 13, 251)),
    "mooncake_synthetic.jsonl": (3_993, 3.91, 1.01, 1.23, (15325, 11587, 66456), (149, 69, 768)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_inspect_figures(name):
    n, rate, cv, peak, prompt, output = EXPECTED[name]
    s = describe(load_trace(TRACES / name))
    assert s["requests"] == n
    assert round(s["mean_rate_per_s"], 2) == rate
    assert s["iat_cv"] == pytest.approx(cv, abs=0.005 if cv < 2 else 0.05)
    assert round(s["peak_to_mean_per_min"], 2) == peak
    assert (round(s["prompt_tokens_mean"]), round(s["prompt_tokens_p50"]), round(s["prompt_tokens_p99"])) == prompt
    assert (round(s["output_tokens_mean"]), round(s["output_tokens_p50"]), int(s["output_tokens_p99"])) == output


def test_bundle_is_small():
    assert sum(p.stat().st_size for p in TRACES.iterdir()) < 5 * 2**20

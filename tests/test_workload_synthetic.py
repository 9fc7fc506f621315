"""Generators against theory: mean rate and inter-arrival CV, with stated tolerances.

With n arrivals the rate estimate's relative standard error is ~1/sqrt(n) (0.4% at 60,000), so 3%
is > 5 sigma; CV estimates of heavy-tailed gaps converge slower, hence 5-8% there. Seeds are fixed,
so the tests are deterministic; the tolerances say how far the theory allows them to drift."""

from pathlib import Path

import numpy as np
import pytest

from sim.errors import FleetsimError
from sim.workload.synthetic import (
    Diurnal,
    Empirical,
    Fixed,
    GammaRenewal,
    Lognormal,
    OnOff,
    Poisson,
    Spike,
    Spikes,
    SyntheticSpec,
    Uniform,
    generate,
    parse_lengths,
    parse_spec,
)

REPO = Path(__file__).resolve().parents[1]
FIXED = Fixed(tokens=100)


def gaps(frame):
    return np.diff(frame["arrival_at_s"].to_numpy())


def rate_and_cv(frame, duration):
    g = gaps(frame)
    return len(frame) / duration, g.std() / g.mean()


def spec(arrivals, *, duration_s=None, n_requests=None, seed=7, prompt=FIXED, output=FIXED):
    return SyntheticSpec(
        arrivals=arrivals, prompt_tokens=prompt, output_tokens=output, duration_s=duration_s, n_requests=n_requests, seed=seed
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poisson_rate_and_cv(seed):
    f = generate(spec(Poisson(rate_per_s=20), duration_s=3000, seed=seed))
    rate, cv = rate_and_cv(f, 3000)
    assert rate == pytest.approx(20, rel=0.03)
    assert cv == pytest.approx(1.0, rel=0.03)
    assert f["arrival_at_s"].iloc[0] == 0.0


@pytest.mark.parametrize(("cv", "tol"), [(0.5, 0.03), (2.0, 0.05), (4.0, 0.08)])
def test_gamma_cv_follows_vllm_burstiness(cv, tol):
    f = generate(spec(GammaRenewal(rate_per_s=10, cv=cv), n_requests=60_000))
    g = gaps(f)
    assert 1 / g.mean() == pytest.approx(10, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(cv, rel=tol)


def test_onoff_interrupted_poisson_rate_and_cv():
    # Interrupted Poisson (off rate 0): mean rate lam*on/(on+off); the gaps are hyperexponential
    # with CV^2 = 1 + 2*lam*a/(a+b)^2, a = 1/mean_on, b = 1/mean_off.
    lam, on, off = 10.0, 5.0, 15.0
    f = generate(spec(OnOff(on_rate_per_s=lam, mean_on_s=on, mean_off_s=off), duration_s=400_000))
    a, b = 1 / on, 1 / off
    rate, cv = rate_and_cv(f, 400_000)
    assert rate == pytest.approx(lam * on / (on + off), rel=0.03)
    assert cv == pytest.approx(np.sqrt(1 + 2 * lam * a / (a + b) ** 2), rel=0.05)


def test_onoff_mmpp_mean_rate():
    f = generate(spec(OnOff(on_rate_per_s=12, off_rate_per_s=2, mean_on_s=30, mean_off_s=90), duration_s=200_000))
    assert len(f) / 200_000 == pytest.approx((12 * 30 + 2 * 90) / 120, rel=0.03)


def test_diurnal_sinusoid_rate_over_whole_periods_and_shape():
    period = 1000.0
    f = generate(spec(Diurnal(mean_rate_per_s=10, period_s=period, amplitude=0.8), duration_s=50 * period))
    assert len(f) / (50 * period) == pytest.approx(10, rel=0.03)
    phase = (f["arrival_at_s"].to_numpy() % period) / period
    first_half = np.mean(phase < 0.5)  # integral of 1 + a sin over the first half: (1 + 2a/pi)/2
    assert first_half == pytest.approx((1 + 2 * 0.8 / np.pi) / 2, rel=0.03)


def test_diurnal_rate_table_scaled_to_target_mean_and_compressed():
    table = REPO / "traces" / "servegen_m-large_rate.csv"
    f = generate(spec(Diurnal(mean_rate_per_s=5, rate_table=str(table), time_scale=14.0), duration_s=86_400))
    assert len(f) / 86_400 == pytest.approx(5, rel=0.03)
    # 10-minute windows of the table become 600/14 s; per-window counts follow the table's shape.
    starts = np.arange(2016) * 600 / 14
    counts = np.bincount(np.searchsorted(starts, f["arrival_at_s"].to_numpy(), side="right") - 1, minlength=2016)
    rates = np.loadtxt(table, delimiter=",", skiprows=1)[:, 1]
    assert np.corrcoef(counts, rates)[0, 1] > 0.95


def test_spikes_multiply_the_rate_inside_windows():
    s = Spikes(rate_per_s=10, spikes=[Spike(at_s=1000, duration_s=500, multiplier=5)])
    f = generate(spec(s, duration_s=3000))
    t = f["arrival_at_s"].to_numpy()
    inside = np.sum((t >= 1000) & (t < 1500))
    assert inside / 500 == pytest.approx(50, rel=0.05)
    assert (len(t) - inside) / 2500 == pytest.approx(10, rel=0.05)


def test_lengths_match_their_distributions():
    n = 50_000
    f = generate(spec(Poisson(rate_per_s=1), n_requests=n, prompt=Uniform(low=10, high=20), output=Lognormal(mean=200, cv=1.5)))
    p, o = f["prompt_tokens"].to_numpy(), f["output_tokens"].to_numpy()
    assert p.min() == 10 and p.max() == 20 and p.mean() == pytest.approx(15, rel=0.01)
    assert o.mean() == pytest.approx(200, rel=0.03)
    assert o.std() / o.mean() == pytest.approx(1.5, rel=0.08)
    capped = generate(spec(Poisson(rate_per_s=1), n_requests=1000, output=Lognormal(mean=200, cv=1.5, max=300)))
    assert capped["output_tokens"].max() <= 300 and capped["output_tokens"].min() >= 1


def test_empirical_resamples_a_real_trace():
    source = REPO / "traces" / "azure2023_conv.csv"
    f = generate(spec(Poisson(rate_per_s=1), n_requests=20_000, prompt=Empirical(trace=str(source), column="prompt_tokens")))
    from sim.workload import load_trace

    real = load_trace(source)["prompt_tokens"]
    assert set(f["prompt_tokens"].unique()) <= set(real.unique())
    assert f["prompt_tokens"].mean() == pytest.approx(real.mean(), rel=0.03)


def test_same_seed_same_trace_and_streams_are_independent():
    a = generate(spec(Poisson(rate_per_s=5), duration_s=100, seed=3))
    b = generate(spec(Poisson(rate_per_s=5), duration_s=100, seed=3))
    assert a.equals(b)
    c = generate(spec(Poisson(rate_per_s=5), duration_s=100, seed=3, output=Uniform(low=1, high=9)))
    assert np.array_equal(a["arrival_at_s"], c["arrival_at_s"])  # changing lengths leaves arrivals alone


def test_spec_validation_errors():
    with pytest.raises(FleetsimError, match=r"give exactly one of duration_s and n_requests"):
        parse_spec(
            {
                "arrivals": {"process": "poisson", "rate_per_s": 1},
                "prompt_tokens": {"dist": "fixed", "tokens": 1},
                "output_tokens": {"dist": "fixed", "tokens": 1},
            }
        )
    with pytest.raises(FleetsimError, match=r"<spec>: arrivals.rate_per_s: Input should be greater than 0 \(got -1\)"):
        parse_spec(
            {
                "arrivals": {"process": "poisson", "rate_per_s": -1},
                "prompt_tokens": {"dist": "fixed", "tokens": 1},
                "output_tokens": {"dist": "fixed", "tokens": 1},
                "n_requests": 5,
            }
        )
    with pytest.raises(FleetsimError, match=r"high must be >= low \(got 1 < 5\)"):
        parse_lengths("uniform:5:1")
    with pytest.raises(FleetsimError, match=r"expected fixed:N"):
        parse_lengths("normal:5")


def test_max_context_clips_independently_drawn_lengths():
    from sim.workload.synthetic import parse_spec

    spec = parse_spec(
        {
            "arrivals": {"process": "poisson", "rate_per_s": 5},
            "n_requests": 500,
            "prompt_tokens": {"dist": "uniform", "low": 100, "high": 4000},
            "output_tokens": {"dist": "uniform", "low": 100, "high": 4000},
            "max_context": 4096,
        }
    )
    clipped, free = generate(spec), generate(spec.model_copy(update={"max_context": None}))
    assert ((clipped["prompt_tokens"] + clipped["output_tokens"]) <= 4096).all()
    assert ((free["prompt_tokens"] + free["output_tokens"]) > 4096).any()
    assert (clipped["prompt_tokens"] == free["prompt_tokens"]).all()  # prompts fit already: only outputs shrink

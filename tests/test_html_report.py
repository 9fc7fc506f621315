"""The HTML report: self-contained and accessible (parsed), and rendered in a real browser (headless
Chromium, Debian's `chromium`; .ci/run installs it): the key figures in the rendered DOM equal
summary.json, every figure is decoded and fits a 1280 px window, the screenshot is not blank, the console
stays quiet."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    page = tmp / "run.html"
    r = CliRunner().invoke(
        app,
        [
            "run",
            str(REPO / "configs" / "startup-autoscale.yaml"),
            "--out",
            str(tmp / "run"),
            "--no-progress",
            "--html",
            str(page),
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    return page, summary


def key_figures(summary):
    """Figures the page must show, formatted as it formats them."""
    return [
        f"{summary['completed']:,}",
        f"{summary['p99_ttft_ms']:,.2f}",
        f"{summary['median_tpot_ms']:,.2f}",
        f"{summary['p99_e2el_ms']:,.2f}",
        f"${summary['usd_per_1k_tokens']:.5f}",
        f"${summary['usd_per_1k_prompt_tokens']:.5f}",
        f"{summary['throughput_utilization']:.1%}",
        f"{summary['gpu_time_utilization']:.1%}",
        f"${summary['cost_usd']:,.4f}",
        "startup-autoscale: llama-2-70b, hpa 1-16 replicas of 2x a100-80gb",
    ]


def test_the_page_is_self_contained_and_accessible(report):
    page, summary = report
    doc = Page()
    doc.feed(page.read_text())
    tags = [t for t, _ in doc.tags]
    assert tags.count("h1") == 1 and tags.count("h2") >= 5
    images = [a for t, a in doc.tags if t == "img"]
    assert len(images) == 2
    for a in images:
        assert (a.get("src") or "").startswith("data:image/png;base64,") and len(a.get("alt") or "") > 40
    for _, a in doc.tags:  # nothing fetched from anywhere: no script, no external file
        for key in ("src", "href"):
            assert not re.match(r"https?:|//", a.get(key) or "")
    assert "script" not in tags and "link" not in tags
    assert tags.count("caption") == tags.count("table") >= 4
    assert all(a.get("scope") in ("col", "row") for t, a in doc.tags if t == "th")
    text = "".join(doc.text)
    for figure in key_figures(summary):
        assert figure in text, figure
    bad = CliRunner().invoke(app, ["report", str(page.parent / "run"), "--html", str(page.parent / "missing" / "x.html")])
    assert bad.exit_code != 0 and "does not exist" in bad.output


def chromium(*args, timeout=90):
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's package)")
def test_the_page_renders_in_a_real_browser(report, tmp_path):
    page, summary = report
    url = page.as_uri()
    # the rendered DOM carries the key figures, and the console has nothing to say
    dom = chromium("--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for figure in key_figures(summary):
        assert figure in dom.stdout, figure
    assert ":CONSOLE(" not in dom.stderr and "Uncaught" not in dom.stderr
    # every figure decoded and inside a 1280 px window: measured by the browser itself
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const r = [...document.images].map(i => {"
        " const b = i.getBoundingClientRect(); return {w: b.width, h: b.height, left: b.left, right: b.right,"
        " natural: i.naturalWidth}; }); const p = document.createElement('pre'); p.id = 'layout';"
        " p.textContent = JSON.stringify({images: r, scroll: document.documentElement.scrollWidth});"
        " document.body.appendChild(p); });</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    laid = chromium("--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    layout = json.loads(re.search(r'<pre id="layout">(.*?)</pre>', laid.stdout, re.S).group(1).replace("&quot;", '"'))
    assert len(layout["images"]) == 2 and layout["scroll"] <= 1280
    for image in layout["images"]:
        assert image["natural"] > 0 and image["w"] > 600 and image["h"] > 200
        assert image["left"] >= 0 and image["right"] <= 1280
    # the screenshot is a page, not a blank
    shot = tmp_path / "shot.png"
    chromium("--window-size=1280,2400", f"--screenshot={shot}", url)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    ink = (pixels < 0.85).any(axis=2).mean()
    assert 0.02 < ink < 0.9 and pixels.std() > 0.05


def test_a_batch_run_keeps_batch_latency_apart_from_the_interactive_slo(tmp_path):
    """Batch requests answer to their job's deadline: the page's latency table, goodput, attainment and CDFs with
    the SLO are the interactive requests' (by_class), batch latency has a table of its own, and the classes
    table does not score batch work against the interactive SLO."""
    page = tmp_path / "b.html"
    args = [
        "run",
        str(REPO / "configs" / "batch-backfill.yaml"),
        "--set",
        "trace.duration_s=900",
        "--set",
        "batch.jobs.0.requests=1500",
    ]
    r = CliRunner().invoke(
        app, [*args, "--set", "batch.jobs.0.deadline_s=900", "--out", str(tmp_path / "run"), "--no-capacity", "--html", str(page)]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    inter, batch = summary["by_class"]["interactive"], summary["by_class"]["batch"]
    html = page.read_text()

    def table(ident):
        return re.search(rf'<table id="{ident}">(.*?)</table>', html, re.S).group(1)

    latency = table("latency")
    assert "Latency of interactive requests" in latency and f"{inter['p99_ttft_ms']:,.2f}" in latency
    assert f"{summary['p99_ttft_ms']:,.2f}" not in latency  # not the pooled figure (batch TTFTs are minutes)
    assert f"{batch['p99_ttft_ms']:,.2f}" in table("latency-batch")
    assert f"{inter['slo_attainment']:.1%}" in table("summary") and "interactive goodput" in table("summary")
    assert re.search(r'<th scope="row">batch</th>(<td>[^<]*</td>){3}<td>— \(deadline\)</td>', table("classes"))
    assert "interactive requests&#x27; TTFT" in html and "batch requests&#x27; curves dashed" in html

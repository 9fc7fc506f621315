"""Alibaba's Qwen Bailian traces (alibaba-edu/qwen-bailian-usagetraces-anon, Apache-2.0; `qwen_traceA_blksz_16.jsonl`
and its kin): Mooncake's JSON-lines fields with timestamps in seconds (Mooncake's are in ms) and hash ids of 16
tokens (Mooncake's: 512), plus chat_id, parent_chat_id, type and turn. Read as Mooncake they were 1,000x faster
arrivals, and with prefix caching each id was taken for 512 tokens, silently."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.run.pools import check_hash_blocks
from sim.run.simulate import simulate
from sim.scenario.config import load_config, parse_config
from sim.workload.readers import load_trace, trace_windows

# a session's first turn, a short search, and the first turn's follow-up (its history's 32 blocks again, then its own)
ROWS = [
    {
        "chat_id": 0,
        "parent_chat_id": -1,
        "timestamp": 0.0,
        "input_length": 521,
        "output_length": 132,
        "type": "text",
        "turn": 1,
        "hash_ids": list(range(33)),
    },
    {
        "chat_id": 1,
        "parent_chat_id": -1,
        "timestamp": 0.512,
        "input_length": 40,
        "output_length": 10,
        "type": "search",
        "turn": 1,
        "hash_ids": [34, 35, 36],
    },
    {
        "chat_id": 2,
        "parent_chat_id": 0,
        "timestamp": 61.114,
        "input_length": 700,
        "output_length": 50,
        "type": "text",
        "turn": 2,
        "hash_ids": [*range(32), *range(40, 52)],
    },
]


@pytest.fixture
def bailian(tmp_path):
    path = tmp_path / "qwen_traceA_blksz_16.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_a_bailian_trace_is_detected_and_read_in_seconds(bailian):
    frame = load_trace(bailian)
    assert frame.attrs["format"] == "bailian" and frame.attrs["hash_block_tokens"] == 16
    assert frame["arrival_at_s"].tolist() == [0.0, 0.512, 61.114]
    assert frame["prompt_tokens"].tolist() == [521, 40, 700]
    assert [list(h) for h in frame["prefix_hash_ids"]] == [r["hash_ids"] for r in ROWS]
    assert trace_windows(bailian) is None  # (read whole, as Mooncake's)


def test_mooncake_keeps_its_milliseconds_and_512_token_ids():
    frame = load_trace("traces/mooncake_synthetic.jsonl")
    assert frame.attrs["format"] == "mooncake" and frame.attrs["hash_block_tokens"] == 512
    assert frame["arrival_at_s"].iloc[-1] == pytest.approx(1021.0, abs=30)  # 17 minutes, not 17,000


def test_the_same_rows_forced_to_mooncake_read_as_milliseconds(bailian):
    assert load_trace(bailian, format="mooncake")["arrival_at_s"].tolist() == pytest.approx([0.0, 0.000512, 0.061114])


def test_prefix_caching_on_a_bailian_trace_needs_its_block_size(bailian):
    sc = load_config("configs/prefix-cache.yaml", [f"trace={bailian}"])
    with pytest.raises(
        FleetsimError, match=r"its bailian hash ids stand for 16 tokens each, not engine.prefix_hash_block_tokens \(512\)"
    ):
        simulate(sc, load_trace(bailian), measure_capacity=False)
    sc = load_config("configs/prefix-cache.yaml", [f"trace={bailian}", "engine.prefix_hash_block_tokens=16"])
    r = simulate(sc, load_trace(bailian), measure_capacity=False)
    s = r.summary()
    assert s["completed"] == 3
    # the follow-up hit its history: 32 ids of 16 tokens (routed to the replica that holds them)
    assert r.requests["cached_tokens"].tolist()[2] == 32 * 16


def test_ids_finer_than_the_engine_blocks_are_refused_without_the_format_named():
    """A trace converted to canonical columns keeps its ids but not its format: more ids than the prompt has blocks."""
    trace = pd.DataFrame({"arrival_at_s": [0.0, 1.0], "prompt_tokens": [512, 521], "output_tokens": [5, 5]})
    trace["prefix_hash_ids"] = pd.Series([list(range(1)), list(range(33))], dtype=object)
    check_hash_blocks(trace.iloc[:1], 512)  # one id per 512 tokens: fine
    with pytest.raises(FleetsimError, match=r"trace row 1: 33 prefix hash ids for 521 prompt tokens, .* about 16 tokens each"):
        check_hash_blocks(trace, 512)
    check_hash_blocks(trace, 16)
    sc = parse_config(
        {
            "model": "llama-3.1-8b",
            "fleet": {"gpu": "h100-sxm", "tp": 1},
            "engine": {"prefix_caching": True, "prefix_hash_block_tokens": 512},
        }
    )
    with pytest.raises(FleetsimError, match="trace row 1: 33 prefix hash ids"):
        simulate(sc, trace, measure_capacity=False)

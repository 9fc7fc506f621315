import numpy as np
import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.workload import transforms as tf
from sim.workload import validate_frame


def frame(times, prompt=None, output=None):
    n = len(times)
    return validate_frame(
        pd.DataFrame(
            {
                "arrival_at_s": times,
                "prompt_tokens": prompt or [10] * n,
                "output_tokens": output or [5] * n,
            }
        )
    )


def test_window_rebases_to_first_kept_arrival():
    f = tf.window(frame([0.0, 1.0, 2.0, 3.0, 4.0]), start_s=1.5, end_s=3.5)
    assert f["arrival_at_s"].tolist() == [0.0, 1.0]
    with pytest.raises(FleetsimError, match="no requests left"):
        tf.window(frame([0.0, 1.0]), start_s=5.0)
    with pytest.raises(FleetsimError, match=r"end_s must be > start_s"):
        tf.window(frame([0.0]), start_s=2, end_s=1)


def test_scale_rate_compresses_time():
    assert tf.scale_rate(frame([0.0, 2.0, 4.0]), 2.0)["arrival_at_s"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(FleetsimError, match=r"must be a finite number between 1e-06 and 1e\+06 \(got 0\)"):
        tf.scale_rate(frame([0.0]), 0)


def test_subsample_is_seeded_bernoulli():
    f = frame(list(np.arange(10_000.0)))
    a = tf.subsample(f, 0.3, np.random.default_rng(1))
    b = tf.subsample(f, 0.3, np.random.default_rng(1))
    assert a.equals(b) and len(a) == pytest.approx(3000, rel=0.05)


def test_clip_tokens_fits_the_context():
    f = tf.clip_tokens(frame([0.0, 1.0, 2.0], prompt=[100, 5000, 10], output=[50, 10, 9000]), 4096)
    assert f["prompt_tokens"].tolist() == [100, 4095, 10]
    assert f["output_tokens"].tolist() == [50, 1, 4086]
    assert f.attrs["clipped_requests"] == 2


def test_repeat_shifts_copies_and_keeps_order():
    f = tf.repeat(frame([0.0, 1.0, 3.0]), 3)
    t = f["arrival_at_s"].to_numpy()
    assert len(t) == 9 and np.all(np.diff(t) >= 0)
    assert t[3] == pytest.approx(3.0 + 1.5)  # span + mean gap
    with pytest.raises(FleetsimError, match=r"shift_s must be >= the trace's span"):
        tf.repeat(frame([0.0, 5.0]), 2, shift_s=1.0)


def test_merge_interleaves_with_class_labels():
    online = frame([0.0, 2.0, 4.0])
    batch = frame([0.0, 2.0], prompt=[99, 98])  # each trace counts from its own first arrival
    m = tf.merge({"online": online, "batch": batch}, klass={"online": "interactive", "batch": "batch"})
    assert m["klass"].tolist() == ["interactive", "batch", "interactive", "batch", "interactive"]
    assert m["arrival_at_s"].tolist() == [0.0, 0.0, 2.0, 2.0, 4.0]  # ties: the first trace first
    validate_frame(m)
    with pytest.raises(FleetsimError, match=r"klass must be one of interactive, batch \(got 'bulk'"):
        tf.merge({"a": online}, klass={"a": "bulk"})


def test_trace_file_spec_passes_reader_options(tmp_path):
    from sim.workload.transforms import TraceFile, load_trace_file

    (tmp_path / "b.csv").write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,100,20,120,Conversation log\n7,GPT-4,300,30,330,API log\n9,GPT-4,50,0,50,API log\n"
    )
    f = load_trace_file(TraceFile(file="b.csv", model="GPT-4"), base_dir=tmp_path, seed=0)
    assert f["prompt_tokens"].tolist() == [300]
    (tmp_path / "g.csv").write_text("t,i,o\n1000,5,1\n3000,6,2\n")
    g = load_trace_file(
        TraceFile(file="g.csv", columns={"arrival_at_s": "t", "prompt_tokens": "i", "output_tokens": "o"}, time_unit="ms"),
        base_dir=tmp_path,
        seed=0,
    )
    assert g["arrival_at_s"].tolist() == [0.0, 2.0]


def test_a_cut_prompt_keeps_only_the_hash_ids_of_the_blocks_it_still_holds():
    """Mooncake ids stand for 512 tokens: a 2,000-token prompt cut to 999 keeps 2 of its 4 ids (the block hit rate
    counted the other two as blocks never matched, 1.4% against a 30.5% token hit rate), and `trace convert
    --max-context` wrote them into a file that was then refused. A prompt left whole keeps its ids; a format that does
    not say what an id stands for keeps them all."""
    from sim.workload.hash_ids import as_column

    frame = pd.DataFrame(
        {
            "arrival_at_s": [0.0, 1.0],
            "prompt_tokens": [2000, 600],
            "output_tokens": [10, 10],
            "prefix_hash_ids": as_column([np.arange(4), np.arange(10, 12)]),
        }
    )
    frame.attrs["hash_block_tokens"] = 512
    cut = tf.clip_tokens(frame, 1000)
    assert cut["prompt_tokens"].tolist() == [999, 600]
    assert [list(h) for h in cut["prefix_hash_ids"]] == [[0, 1], [10, 11]]
    frame.attrs.pop("hash_block_tokens")
    assert [len(h) for h in tf.clip_tokens(frame, 1000)["prefix_hash_ids"]] == [4, 2]


def test_traces_hashed_in_different_block_sizes_are_not_merged():
    """Mooncake's ids (512 tokens each) and Bailian's (16) put in one column collide: unrelated prefixes would hit."""
    from sim.workload.hash_ids import as_column

    def hashed(block, t0):
        f = pd.DataFrame(
            {
                "arrival_at_s": [t0],
                "prompt_tokens": [1024],
                "output_tokens": [4],
                "prefix_hash_ids": as_column([np.arange(2)]),
            }
        )
        f.attrs["hash_block_tokens"] = block
        return f

    with pytest.raises(FleetsimError, match=r"merge: .*blocks of different sizes \(a: 512, b: 16 tokens\)"):
        tf.merge({"a": hashed(512, 0.0), "b": hashed(16, 1.0)})
    same = tf.merge({"a": hashed(512, 0.0), "b": hashed(512, 1.0)})
    assert len(same) == 2 and same.attrs["hash_block_tokens"] == 512

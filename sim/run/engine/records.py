"""Per-request records as columns indexed by request, and inter-token gaps in compact form.

Instants are seconds on the simulation clock (NaN until they happen). Inter-token latencies are
kept exactly but without one entry per token: a fast-forwarded decode run of k steps over n
sequences contributes its first gap once per distinct previous-token instant (weighted by the sequences
that share it: the decode group's members share one) and the remaining (k-1) step durations as linear
pieces `value = a + b*j` (j in [j0, j1)) with weight n.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

import numpy as np

from sim.run.store import GAP_COLUMNS, RELEASE_EVERY, FileColumns, SpilledGaps, blocks
from sim.states import RequestStatus

# plain ints for the hot path (numpy stores them in an int8 column)
NOT_ARRIVED, IN_FLIGHT, COMPLETED, REJECTED = (int(s) for s in RequestStatus)


class ItlLog:
    """The gap record in typed arrays (8 bytes a number: a 1 M-request day holds millions of entries)."""

    __slots__ = ("grouped_v", "grouped_w", "piece_a", "piece_b", "piece_j0", "piece_j1", "piece_w", "singles", "spilled")

    def __init__(self, spilled: SpilledGaps | None = None) -> None:
        self.singles = array("d")  # single gaps
        self.grouped_v, self.grouped_w = array("d"), array("q")  # a gap and how many sequences had it
        # linear pieces: a + b*j for j in [j0, j1), each with a weight
        self.piece_a, self.piece_b = array("d"), array("d")
        self.piece_j0, self.piece_j1, self.piece_w = array("q"), array("q"), array("q")
        self.spilled = spilled  # a stored run: where `spill` appends the record (None: it stays in memory)

    def spill(self) -> None:
        """A stored run: append what the record holds to its files and empty it (the same arrays, emptied)."""
        if self.spilled is None:
            return
        for name in GAP_COLUMNS:
            col = getattr(self, name)
            if len(col):
                self.spilled.append(name, memoryview(col))
                del col[:]

    def add_grouped(self, gap: float, weight: int) -> None:
        self.grouped_v.append(gap)
        self.grouped_w.append(weight)

    def add_grouped_many(self, gaps: list[float], weight: int) -> None:
        """Gaps each `weight` sequences had (a run's steps)."""
        self.grouped_v.extend(gaps)
        self.grouped_w.extend([weight] * len(gaps))

    def add_piece(self, a: float, b: float, j0: int, j1: int, weight: int) -> None:
        self.piece_a.append(a)
        self.piece_b.append(b)
        self.piece_j0.append(j0)
        self.piece_j1.append(j1)
        self.piece_w.append(weight)

    def arrays(self) -> dict[str, np.ndarray]:
        """The record as numpy arrays (views of the same memory)."""
        columns: dict[str, array[float] | array[int]] = {
            "singles": self.singles,
            "grouped_v": self.grouped_v,
            "grouped_w": self.grouped_w,
            "piece_a": self.piece_a,
            "piece_b": self.piece_b,
            "piece_j0": self.piece_j0,
            "piece_j1": self.piece_j1,
            "piece_w": self.piece_w,
        }
        return {name: np.frombuffer(col, dtype=np.float64 if col.typecode == "d" else np.int64) for name, col in columns.items()}


class RequestLog:
    """Columns for n requests; `reasons` maps a rejected request index to its reason."""

    __slots__ = (
        "arrival_at_s",
        "cached_tokens",
        "completed_at_s",
        "first_token_at_s",
        "itl",
        "n_preemptions",
        "n_resolved",
        "on_all_resolved",
        "output_tokens",
        "prefill_saved_tokens",
        "prompt_tokens",
        "reasons",
        "released_at",
        "replica_id",
        "scheduled_at_s",
        "status",
        "store",
    )

    def __init__(
        self,
        arrival_at_s: np.ndarray,
        prompt_tokens: np.ndarray,
        output_tokens: np.ndarray,
        *,
        store: FileColumns | None = None,
        spilled: SpilledGaps | None = None,
    ) -> None:
        """`store`: a stored run's columns in files (`sim.run.store`), its gap record `spilled`; else in memory."""
        n = len(arrival_at_s)
        self.arrival_at_s = np.asarray(arrival_at_s, dtype=np.float64)
        self.prompt_tokens, self.output_tokens = (np.asarray(x, dtype=np.int64) for x in (prompt_tokens, output_tokens))
        self.store = store
        if store is None:
            self.scheduled_at_s, self.first_token_at_s, self.completed_at_s = (np.full(n, np.nan) for _ in range(3))
            self.n_preemptions = np.zeros(n, dtype=np.int32)
            self.replica_id = np.full(n, -1, dtype=np.int32)
            self.status = np.zeros(n, dtype=np.int8)
            self.cached_tokens = np.full(n, np.nan)  # prefix caching: prompt tokens found cached at its first admission
        else:
            for name in ("arrival_at_s", "prompt_tokens", "output_tokens"):  # (a stored trace's: handed back with the log's)
                store.adopt(getattr(self, name))
            self.scheduled_at_s, self.first_token_at_s, self.completed_at_s = (
                store.column(name, n, np.float64, np.nan) for name in ("scheduled_at_s", "first_token_at_s", "completed_at_s")
            )
            self.n_preemptions = store.column("n_preemptions", n, np.int32)
            self.replica_id = store.column("replica_id", n, np.int32, -1)
            self.status = store.column("status", n, np.int8)
            self.cached_tokens = store.column("cached_tokens", n, np.float64, np.nan)
        self.reasons: dict[int, str] = {}
        self.itl = ItlLog(spilled)
        self.n_resolved = 0
        self.released_at = 0  # a stored run: the arrivals delivered when its pages were last handed back
        self.on_all_resolved: Callable[[], None] | None = None
        self.prefill_saved_tokens = 0  # prefix caching: prompt tokens not computed, recomputes included

    def __len__(self) -> int:
        return len(self.arrival_at_s)

    def delivered(self, i: int) -> None:
        """The feed has delivered `i` requests (called every window of arrivals): a stored run spills its gap record
        and hands its columns' pages back every `RELEASE_EVERY` arrivals."""
        if self.store is not None and i - self.released_at >= RELEASE_EVERY:
            self.released_at = i
            self.itl.spill()
            self.store.release()

    def _resolved(self) -> None:
        self.n_resolved += 1
        if self.n_resolved == len(self.arrival_at_s) and self.on_all_resolved is not None:
            self.on_all_resolved()

    def reject(self, idx: int, reason: str) -> None:
        self.status[idx] = REJECTED
        self.reasons[idx] = reason
        self._resolved()

    def complete(self, idx: int, t: float) -> None:
        self.completed_at_s[idx] = t
        self.status[idx] = COMPLETED
        self._resolved()

    def check_invariants(self) -> None:
        """Cheap end-of-run checks; a failure is a simulator bug."""
        rejected = 0
        columns = (self.status, self.arrival_at_s, self.scheduled_at_s, self.first_token_at_s, self.completed_at_s)
        for lo, (status, *instants) in blocks(RELEASE_EVERY, *columns):  # (bounded temporaries; pages handed back)
            done = status == COMPLETED
            assert not np.any(status == NOT_ARRIVED), "a request never arrived"
            a, s, f, c = (x[done] for x in instants)
            assert np.all(a <= s) and np.all(s <= f) and np.all(f <= c), "per-request timestamps out of order"
            refused = np.flatnonzero(status == REJECTED) + lo
            assert all(int(i) in self.reasons for i in refused), "a rejection without a reason"
            rejected += refused.size
        assert rejected == len(self.reasons), "a reason for a request not rejected"

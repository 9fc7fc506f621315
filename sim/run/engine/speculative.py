"""Speculative decoding in the engine: a replica's seeded draws of accepted drafts (`Acceptance`) and the step-time
model that prices a verify step (`SpeculativeStepTime`, a wrapper around the target's model). The arithmetic of
what speculation buys (expected tokens per step, a verify step's cost) is `sim.physics.speculative`'s."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sim.physics.roofline import scheduled_seqs
from sim.run.engine.sequence import Seq
from sim.run.engine.step_time import RooflineStepTime, StepTimeModel, linear_runs

Run = tuple[list[float], list[float], list[float]]  # a priced run: its steps' ends, FLOPs and bytes
_ONE_STEP = (0,)
_ZERO = np.zeros(1, dtype=np.int64)
_MAX_EXACT = 1 << 53  # (contexts below it are exact as floats)
_EPS_INV = 10**12  # 1 / the relative gap no rounding of (m + a x) / f (3 roundings: < 4e-16 relative) can close
_TINY_BITS = 1000  # 2^-1000: well above the subnormal floats, 2^-1022 and below


def _quotient(x: float, y: float) -> tuple[int, int]:
    """x / y (y > 0) exactly, as (numerator, denominator > 0): floats are integers times powers of two."""
    xp, xq = x.as_integer_ratio()
    yp, yq = y.as_integer_ratio()
    return xp * yq, xq * yp


def _tiny(p: int, q: int) -> bool:
    """0 < p / q < 2^-1000 (q > 0)."""
    return p > 0 and p << _TINY_BITS < q


def surely_bound(m: float, a: float, f: float, w: float, kv: float, b: float, compute: bool) -> tuple[int, int]:
    """The integers x (in [0, 2^53)) at which `(m + a * x) / f >= (w + kv * x) / b` is surely `compute` in floats
    (m, a, w, kv >= 0; f, b > 0): those where the exact sides differ by more than a 1e-12 relative gap, which no
    rounding of either side closes. (lo, hi), empty when lo > hi. Lets a run skip evaluating a compute/memory
    comparison whose outcome is already certain; where it is not, the run evaluates it as it always did. (Exact
    rational arithmetic in Python ints: every float is an integer times a power of two.)"""
    fm, fa, fw, fk = _quotient(m, f), _quotient(a, f), _quotient(w, b), _quotient(kv, b)
    if any(_tiny(p, q) for p, q in (fm, fa, fw, fk, *(v.as_integer_ratio() for v in (m, a, w, kv)))):
        return 1, 0  # (near the subnormal floats a rounding's relative error is unbounded: the margin proves nothing)
    sign = 1 if compute else -1
    # sign * (difference) - 1e-12 * (sum) > 0: surely, as c0 + c1 x > 0; c0 = C0 / (D0 10^12), c1 = C1 / (D1 10^12)
    (mp, mq), (wp, wq), (ap, aq), (kp, kq) = fm, fw, fa, fk
    d0, d1 = mq * wq, aq * kq
    c0 = sign * (mp * wq - wp * mq) * _EPS_INV - (mp * wq + wp * mq)
    c1 = sign * (ap * kq - kp * aq) * _EPS_INV - (ap * kq + kp * aq)
    if c1 > 0:  # x > -c0 / c1 = -(C0 D1) / (C1 D0)
        return max((-c0 * d1) // (c1 * d0) + 1, 0), _MAX_EXACT - 1
    if c1 < 0:  # x < (C0 D1) / (-C1 D0)
        return 0, min(-((-c0 * d1) // (-c1 * d0)) - 1, _MAX_EXACT - 1)
    return (0, _MAX_EXACT - 1) if c0 > 0 else (1, 0)


class Acceptance:
    """A replica's seeded draws of accepted drafts: for each verify step, in the order sequences draw their trajectories,
    how many of its k drafts were accepted (draft i with probability `alphas[i]` given the earlier ones were; the first
    rejection ends the run). Each step takes one uniform u of the stream and accepts its first j drafts for j the
    number of `reach` thresholds above u, `reach[j - 1] = alphas[0] x ... x alphas[j - 1]` the chance that a step accepts
    j drafts or more: the same distribution as drawing the drafts one by one, from a quarter of the stream (k = 4). The
    stream is consumed in order, drawn a block at a time (the same values as one step at a time) and kept as the tokens
    each step emits (its own and the drafts accepted)."""

    BUFFER = 4096

    def __init__(self, alphas: np.ndarray, rng: np.random.Generator) -> None:
        self.alphas = alphas
        self.reach = np.cumprod(alphas)  # the chance that a step accepts its first j + 1 drafts, by j (nonincreasing)
        self.rng = rng
        self._buffer: np.ndarray = np.zeros(0, dtype=np.int64)  # tokens per step, from `_at` on not yet used
        self._cum: np.ndarray = np.zeros(1, dtype=np.int64)  # their running sum: `_cum[j]` the tokens of `_buffer[:j]`
        self._at = 0
        self._base = 0  # `_cum[_at]`

    @property
    def k(self) -> int:
        return len(self.alphas)

    def _draw(self, n: int) -> np.ndarray:
        """n steps of the stream, as tokens per step: 1 + the drafts accepted before the first rejection."""
        u = self.rng.random(n)
        tokens: np.ndarray = np.ones(n, dtype=np.int64)
        for r in self.reach.tolist():
            tokens += u < r
        return tokens

    def trajectory(self, seq: Seq) -> None:
        """Draw `seq`'s trajectory: the tokens it emits at each verify step it will take (its own and the drafts
        accepted, clipped at its end by whoever reads it), as many steps as its tokens left need; only those draws are
        used. `traj_cum`: the stream's running sum of tokens at each of its steps' starts and after its last (one entry
        more than `traj`: what it has emitted by step j is `traj_cum[j] - traj_cum[0]`). (Both are views of the
        stream's buffer and its running sum, taken once per draw; they are replaced, never written.)"""
        left = seq.output_tokens - seq.generated
        buf, cum, at, base = self._buffer, self._cum, self._at, self._base
        if at + left > len(buf):
            ext = np.concatenate([_ZERO, buf[at:], self._draw(max(self.BUFFER, left))])
            buf, cum = ext[1:], ext.cumsum()
            self._buffer, self._cum = buf, cum
            at = base = 0
        end = int(cum.searchsorted(base + left))  # the first step through which it has all its tokens, plus one
        seq.traj, seq.traj_cum, seq.traj_pos = buf[at:end], cum[at : end + 1], 0
        self._at = end
        seq.traj_left, seq.traj_e0, seq.traj_end = left, base, cum.item(end)  # (`item`: a Python int, cheaper than int())
        self._base = seq.traj_end


class SpeculativeStepTime:
    """The target's step-time model with speculative decoding: each decoding sequence's step also verifies k drafts
    (k more tokens through the target, attending to its context and to the drafts before them), after k draft
    decode steps (`method` draft: the draft model's own step-time model; mtp: `draft_cost` of the target's decode
    step each; ngram: free). A wrapper: the engine asks it as it asks any step-time model."""

    def __init__(
        self,
        target: StepTimeModel,
        draft: StepTimeModel | None,
        *,
        method: str,
        k: int,
        draft_cost: float,
    ) -> None:
        self.target = target
        self.method = method
        self.k = k
        self.draft_cost = draft_cost  # mtp: a draft token's share of a target decode step
        drafter = None if method == "ngram" else draft if method == "draft" else target
        self._lines = None if drafter is None else linear_runs(drafter)
        assert drafter is None or self._lines is not None, "a draft model without decode lines"
        self._extra_pairs = (k + 1) * (k + 2) // 2 - 1  # a verify's pairs beyond a decode's, per sequence (besides k x context)
        self._run_fns: dict[int, Callable[[int, Sequence[int]], Run]] = {}
        self._draft_fns: dict[int, Callable[[int], float]] = {}  # (`draft_s` by batch size: made with `run_fn`'s)

    def step(
        self,
        n_prefill_tokens: int,
        n_decode_seqs: int,
        attention_pairs: float,
        kv_read_tokens: float,
        decode_context_tokens: int = 0,
        logit_tokens: int | None = None,
        decode_pairs: float | None = None,
        group_tokens: int | None = None,  # (a speculating DP rank is priced as if its group's ranks were alike)
        seqs: int | None = None,
    ) -> tuple[float, float, float]:
        k = self.k
        if seqs is None:  # (the sequences scheduled, for a host cost a sequence: fewer than a verify's logit positions)
            seqs = scheduled_seqs(logit_tokens, n_decode_seqs, n_prefill_tokens)
        extra = k * decode_context_tokens + n_decode_seqs * self._extra_pairs  # the drafts' pairs (decoding queries)
        if decode_pairs is None:
            decode_pairs = decode_context_tokens + n_decode_seqs
        dt, flops, n_bytes = self.target.step(
            n_prefill_tokens + n_decode_seqs * k,
            n_decode_seqs,
            attention_pairs + extra,
            kv_read_tokens,
            decode_context_tokens,
            None if logit_tokens is None else logit_tokens + n_decode_seqs * k,  # a verify's k + 1 positions each
            decode_pairs + extra,
            seqs=seqs,
        )
        return dt + self.draft_s(n_decode_seqs, decode_context_tokens), flops, n_bytes

    def verify(self, n_seqs: int, context_sum: int) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of a step in which `n_seqs` decoders whose contexts sum to `context_sum` verify
        their drafts and nothing else runs: `step` of such a batch."""
        return self.step(0, n_seqs, context_sum + n_seqs, context_sum, context_sum, n_seqs)

    def verify_s(self, n_seqs: int, context_sum: int) -> float:
        """The seconds of `verify` (the same float: a run of one step)."""
        fn = self._run_fns.get(n_seqs)  # (`run_fn`'s lookup, inlined: once per mixed step)
        if fn is None:
            fn = self.run_fn(n_seqs)
        return fn(context_sum, _ONE_STEP)[0][0]

    def run_fn(self, n_seqs: int) -> Callable[[int, Sequence[int]], Run]:
        """A run of verify steps by `n_seqs` decoders whose contexts sum to `context_sum` at its start, priced: given
        that sum and the tokens emitted through each step (cumulative; the last entry unused), each step's end (seconds
        from the run's start), FLOPs and bytes, step j priced at the sum plus the tokens through step j - 1. Its
        per-batch terms bound once: the same arithmetic as `step`, operation for operation, so the same floats."""
        fn = self._run_fns.get(n_seqs)
        if fn is None:
            fn = self._run_fns[n_seqs] = self._make_run_fn(n_seqs)
        return fn

    def _make_run_fn(self, n: int) -> Callable[[int, Sequence[int]], Run]:
        target, lines = self.target, self._lines
        # (sliding-window layers, in the target or the drafter, or a target whose attention runs below its GEMMs'
        # precision: priced a step at a time, `step` itself)
        if (
            not isinstance(target, RooflineStepTime)
            or not isinstance(lines, RooflineStepTime | None)
            or target._share
            or target._attn_factor != 1.0
            or (lines is not None and lines._share)
        ):

            def per_step(context_sum: int, tokens: Sequence[int]) -> Run:
                ends, flops, n_bytes, end = [], [], [], 0.0
                for j in range(len(tokens)):
                    dt, fl, by = self.verify(n, context_sum + tokens[j - 1] if j else context_sum)
                    end += dt
                    ends.append(end)
                    flops.append(fl)
                    n_bytes.append(by)
                return ends, flops, n_bytes

            self._draft_fns[n] = lambda context_sum: self._decode_drafts_s(n, context_sum)
            return per_step
        k = self.k
        n_tok = n * k + n
        target.step(n * k, n, 0, 0)  # (fills the memo of this token count's terms)
        # (tw: the weight bytes the time counts: an MoE model's without its routed experts, priced in `comm`)
        flops0, weight_bytes, comm, hot, tw = target._step_terms[n_tok]
        per_pair = target._attn_per_pair if target._attention else 0.0
        decode_extra = target._decode_extra if target._mla else 0.0  # MLA: a verify's pairs all decode (absorbed form)
        kv, fps, bps = target._kv, target._flops_per_s, target._bytes_per_s
        overlap, g, overhead = target._overlap, target._g, target._overhead
        if target._seq_overhead:  # (a verify step's host time: its n sequences, with the fixed overheads as `step` adds them)
            overhead = overhead + target._seq_overhead * n
        extra = n * self._extra_pairs
        share = self.draft_cost
        n_first, n_last, n_all = n, n * k, n * (k * (k + 1) // 2)  # the drafts' contexts over the sum's: first, last, all
        if lines is None:
            steps: tuple[int, ...] = ()
            mm = wb = dfixed = attn = dkv = f = b = dg = 0.0
            c_lo = m_lo = 0
            c_hi = m_hi = -1
        else:
            mm, wb, dfixed = lines._batch_terms(n)
            attn, dkv, f, b, dg = lines._attn, lines._kv, lines._flops_per_s, lines._bytes_per_s, lines._g
            steps = tuple(n * (j + 1) for j in range(k))  # draft step j's context: the sum's plus n (j + 1)
            # the context sums s at which the first and the last draft step are surely both compute-bound (both
            # memory-bound): their draws' comparisons need not be evaluated there
            c_lo, c_hi = surely_bound(mm, attn, f, wb, dkv, b, True)
            m_lo, m_hi = surely_bound(mm, attn, f, wb, dkv, b, False)
            c_lo, c_hi, m_lo, m_hi = c_lo - n_first, c_hi - n_last, m_lo - n_first, m_hi - n_last
        draft_method = self.method == "draft"
        k_mm, k_wb, k_fixed = k * mm, k * wb, k * dfixed
        # (the loop's constants and branch conditions once a run, not once a step: the pairs, integers, regrouped
        # exactly — `s + n + k * s + extra` is `k1 * s + n_extra` — and the per-run flags as plain bools)
        k1, n_extra = k + 1, n + extra
        has_pairs, has_extra, full_overlap, drafts = bool(per_pair), bool(decode_extra), overlap == 1.0, bool(steps)
        # the common case, a loop of its own without the flags: attention pairs, no MLA term, partial overlap, and a
        # drafter whose steps are surely memory-bound all through the run (its contexts grow with the run's: its first
        # step's and its last's in range)
        plain_target = has_pairs and not has_extra and not full_overlap and drafts

        def draft(s: int) -> float:
            """`draft_s` at context sum s: `decode_sum` of the drafter's line, operation for operation (its
            compute/memory comparisons not evaluated where `surely_bound` says how they come out)."""
            if not drafts:
                return 0.0
            if m_lo <= s <= m_hi:
                first = False
                same = True
            elif c_lo <= s <= c_hi:
                first = same = True
            else:
                lo, hi = s + n_first, s + n_last
                first = (mm + attn * lo) / f >= (wb + dkv * lo) / b
                same = first == ((mm + attn * hi) / f >= (wb + dkv * hi) / b)
            if same:
                ctx = k * s + n_all
                c_s, m_s = (k_mm + attn * ctx) / f, (k_wb + dkv * ctx) / b
                total = (c_s + dg * m_s if first else m_s + dg * c_s) + k_fixed
            else:
                total = 0.0
                for nj in steps:
                    ctx = s + nj
                    c_s, m_s = (mm + attn * ctx) / f, (wb + dkv * ctx) / b
                    total += (c_s + dg * m_s if c_s >= m_s else m_s + dg * c_s) + dfixed
            return total if draft_method else share * total

        self._draft_fns[n] = draft

        def priced(context_sum: int, tokens: Sequence[int]) -> Run:
            ends: list[float] = []
            all_flops: list[float] = []
            all_bytes: list[float] = []
            end = 0.0
            s = context_sum
            if plain_target and m_lo <= s and s + tokens[-1] <= m_hi:
                for x in tokens:  # (the loop below, its branches taken)
                    flops = flops0 + (k1 * s + n_extra) * per_pair
                    kv_bytes = kv * (s + n_tok)
                    n_bytes = weight_bytes + kv_bytes
                    compute_s, memory_s = (flops + hot) / fps, (tw + kv_bytes) / bps
                    dt = (compute_s + g * memory_s if compute_s >= memory_s else memory_s + g * compute_s) + comm + overhead
                    ctx = k * s + n_all
                    total = (k_wb + dkv * ctx) / b + dg * ((k_mm + attn * ctx) / f) + k_fixed
                    end += dt + total if draft_method else dt + share * total
                    ends.append(end)
                    all_flops.append(flops)
                    all_bytes.append(n_bytes)
                    s = context_sum + x
                return ends, all_flops, all_bytes
            for x in tokens:
                pairs = k1 * s + n_extra
                flops = flops0 + pairs * per_pair if has_pairs else flops0
                if has_extra:
                    flops += pairs * decode_extra
                kv_bytes = kv * (s + n_tok)
                n_bytes = weight_bytes + kv_bytes
                compute_s, memory_s = (flops + hot) / fps, (tw + kv_bytes) / bps
                if full_overlap:
                    core = max(compute_s, memory_s)
                else:
                    core = compute_s + g * memory_s if compute_s >= memory_s else memory_s + g * compute_s
                dt = core + comm + overhead
                if drafts:
                    dt += draft(s)
                end += dt
                ends.append(end)
                all_flops.append(flops)
                all_bytes.append(n_bytes)
                s = context_sum + x  # the next step's
            return ends, all_flops, all_bytes

        return priced

    def draft_s(self, n_seqs: int, context_sum: int) -> float:
        """Drafting k tokens for `n_seqs` sequences whose cached contexts sum to `context_sum`: k decode steps, their
        contexts growing a token a step (a decode line's steps, summed: `_decode_drafts_s`, the same float)."""
        if n_seqs == 0:
            return 0.0
        fn = self._draft_fns.get(n_seqs)
        if fn is None:
            self.run_fn(n_seqs)
            fn = self._draft_fns[n_seqs]
        return fn(context_sum)

    def _decode_drafts_s(self, n_seqs: int, context_sum: int) -> float:
        """`draft_s` from the drafter's `decode_sum`."""
        if self._lines is None:
            return 0.0
        # (the drafts run inside the verify step, whose host time the target counts once)
        total = self._lines.decode_sum(n_seqs, context_sum, self.k, False)
        return total if self.method == "draft" else self.draft_cost * total

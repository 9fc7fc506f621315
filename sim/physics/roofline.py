"""Roofline step-time model: FLOPs and bytes of a forward pass -> seconds. Pure functions.

For one step of a replica of `tp` GPUs that processes `n_tokens` new tokens:

    flops   = n_tokens * 2 * active matmul params  +  attention_pairs * attention FLOPs/pair
              - (n_tokens - logit_tokens) * 2 * vocab * hidden     [the LM head runs only where a token is sampled]
    bytes   = weights read (all of them; MoE: the experts the step's tokens touch)
              + KV bytes/token * (kv_read_tokens + n_tokens)        [reads + writes]
    C, M    = flops / (tp * F), bytes / (tp * B)
    time    = max(C, M) + (1 - overlap) * min(C, M) + comm + layer_units * layer_overhead_s + step_overhead_s
              + scheduled sequences * seq_overhead_s
              [MoE: C, M without the routed experts, whose own max(Ce, Me) + (1 - overlap) min(Ce, Me) is added]

with F, B the per-GPU *effective* FLOP/s and bytes/s (peak x mfu, peak x mbu). `attention_pairs`
counts (query token, context token) pairs: a decode token at context c has c + 1, a causal prefill
chunk of n tokens after c cached ones has n*c + n(n+1)/2. comm is two all-reduces of the step's
activations per layer (alpha-beta over the GPU interconnect: a fixed latency per call plus the ring's
bytes over the link). `overlap` is the share of the shorter of compute and memory time that hides under
the longer: 1 is a perfect roofline (the max), 0 runs them back to back; real kernels sit between (near
the crossover a decode step is a third slower than the max). `layer_overhead_s` is the floor a roofline of
FLOPs and bytes does not see: kernel launches, norms, rotary embedding, the KV-cache write, sampling.
`step_overhead_s` and `seq_overhead_s` are host time the GPU waits for, a step's and each scheduled sequence's
(a synchronous engine loop's scheduling, input preparation and output processing; docs/steptime.md).
With attention, comm and both overheads off and overlap 1 this is exactly the seed article's arithmetic
(see SEED.md and tests). Where the defaults come from and how accurate they are: docs/steptime.md.

The LM head (the hidden -> vocabulary matmul) runs only for the positions whose next token is sampled: vLLM computes
logits at each scheduled request's last position (`logits_indices`), so a prefill chunk of n tokens pays for one row,
a decode for one, a speculative verify for its k + 1. `logit_tokens` says how many a step has (None: every token, the
seed article's 2 x parameters per token, which the `seed` preset keeps with `logits: every_token`).

An MoE model's routed experts are a roofline of their own: vLLM runs each MoE layer's experts as one fused kernel
(`fused_moe`: the tokens grouped by expert, each touched expert's weights read once), bound by its own FLOPs or bytes
whatever the rest of the layer is bound by, and the kernels of a layer run one after another. A large prefill chunk
of Qwen3-30B-A3B (2,048 tokens: each expert multiplies 128 of them) reads 1.2 GB of expert weights a layer, memory-bound,
while its attention and projections are compute-bound; one max over the step's sums let either hide under the other, a
fifth too fast against the model's measured kernels (`docs/steptime.md`). A dense model has no such part: its time
is the same either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.errors import FleetsimError
from sim.physics.hardware import GIGA, GpuSpec
from sim.physics.models import ModelSpec
from sim.spec import MAX_STEP_OVERHEAD_S


@dataclass(frozen=True, slots=True)
class RooflineSetup:
    """One replica: a model sharded over `tp` GPUs, plus the roofline's knobs (all resolved)."""

    model: ModelSpec
    gpu: GpuSpec
    tp: int
    effective_flops_per_s: float  # per GPU
    effective_hbm_bw_bytes_per_s: float  # per GPU
    weight_bits: float | None = 16  # every weight at this precision; None: as the checkpoint ships (`ModelSpec.part_bits`)
    kv_bits: int = 16
    activation_bits: int = 16
    compute_dtype: str = "bf16"
    attention: bool = True
    comm: bool = True
    logits_sampled_only: bool = True  # the LM head only at sampled positions (False: every token, the seed's arithmetic)
    step_overhead_s: float = 0.0
    # host seconds a step per sequence it schedules, which the GPU waits for (vLLM's engine loop without async
    # scheduling: scheduling, input preparation and output processing each walk the scheduled requests)
    seq_overhead_s: float = 0.0
    layer_overhead_s: float = 0.0
    overlap: float = 1.0
    gpu_memory_utilization: float = 0.9
    memory_reserve_bytes: float = 0.0
    hybrid_kv: bool = True  # vLLM's hybrid KV cache manager (False: every layer's KV kept for every token: `kv_groups`)
    usd_per_gpu_hour: float | None = None
    kv_memory: str = "vllm"  # how the KV cache is sized: "vllm" (its memory profiling) or "reserve" (a flat share)
    profile_tokens: int = 8192  # the engine's max_num_batched_tokens (vLLM profiles a forward of this many tokens)
    profile_seqs: int = 256  # the engine's max_num_seqs (and the sampler's rows in that profile)
    max_model_len: int | None = None  # the engine's context limit (vLLM's --max-model-len; None: the model's)
    cuda_graphs: bool = True  # vLLM captures CUDA graphs (not --enforce-eager)
    gpus_per_node: int = 8  # GPUs one node's interconnect (NVLink) joins; a larger TP group spans nodes
    # pipeline stages of tp GPUs each (vLLM's pipeline_parallel_size): this replica is one of the server's pp virtual
    # engines, on tp GPUs' share of the server (each stage's GPUs hold its weights: `stage_weights`) with 1/pp of the
    # server's KV blocks; its step passes every stage (the whole model at tp, plus the stages' activation sends:
    # `stage_transfer_s`)
    pp: int = 1
    dp: int = 1  # data-parallel ranks sharing the MoE layers (this replica is one of them: its own batch and KV)
    expert_parallel: bool = False  # experts placed whole over the DP group's GPUs, tokens exchanged all-to-all
    scale_out_bytes_per_s: float = 50e9  # per GPU, one direction, between nodes (default: 400 Gb/s InfiniBand per GPU)
    scale_out_latency_s: float = 2e-5
    # expert parallel: routed tokens the hottest GPU of the group receives over the mean (1: uniform routing)
    expert_load_imbalance: float = 1.0
    # how a DP group's MoE layers exchange tokens: vLLM's default all-gather + reduce-scatter, or a per-destination
    # dispatch and combine (DeepEP, pplx: `fleet.all2all_backend`)
    all2all: str = "allgather_reducescatter"

    # derived once (the setup is frozen; the step model reads them on every step it has not priced before)
    # replicas sharing the MoE layers and stepping together: dp for an MoE model with dp > 1 (`sim.run.engine.lockstep`),
    # else 1 (a dense model's DP ranks share nothing)
    dp_group: int = field(init=False, repr=False, compare=False)
    # GPUs the routed experts are spread over: dp_group x tp
    moe_group: int = field(init=False, repr=False, compare=False)
    # the share of the routed experts' weights this replica (one DP rank) holds
    expert_share: float = field(init=False, repr=False, compare=False)
    # matmul FLOPs a token costs the group's hottest GPU beyond its mean share, in the replica's units (`step_cost`
    # divides by tp GPUs): with expert parallelism and `expert_load_imbalance` above 1, the routed experts' FLOPs
    # times the excess. Time only: the FLOPs counted stay the tokens' own
    hot_expert_flops_per_token: float = field(init=False, repr=False, compare=False)
    # other GPUs of the group a token's top-k experts sit on, in expectation (experts placed whole, E/G a GPU, routing
    # uniform): (G-1) (1 - C(E - E/G, k) / C(E, k)). Two GPUs and top-8 of 128: 0.996, not the 4 that k copies
    # (G-1)/G would count
    remote_expert_gpus: float = field(init=False, repr=False, compare=False)
    # the routed experts' matmul FLOPs a token (all MoE layers, its top-k experts): their own roofline (`expert_costs`)
    routed_flops_per_token: float = field(init=False, repr=False, compare=False)
    # how many times the GEMMs' peak the attention's FLOPs take: attention runs in BF16 (FP8 with an FP8 KV cache, as
    # FlashAttention 3 takes it) whatever the GEMMs' precision, so an FP8 model on Hopper pays 2x for them, an FP4 one
    # on Blackwell 4x (2x with an FP8 KV cache); 1 when the GEMMs run in BF16. Time only: the FLOPs counted stay theirs
    attention_time_factor: float = field(init=False, repr=False, compare=False)
    # each pipeline stage's weight bytes (`stage_weight_bytes`; one stage: `weight_bytes`)
    stage_weights: tuple[float, ...] = field(init=False, repr=False, compare=False)
    # the model's layers in units of the layer `layer_overhead_s` is fitted on (`ModelSpec.layer_units`: its kernels
    # over a Llama layer's ten; W8A8/W4A4 GEMMs add each input's quantization): what the per-layer overhead multiplies
    layer_units: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = self.model
        dp_group = self.dp if m.is_moe and self.dp > 1 else 1
        g = dp_group * self.tp
        object.__setattr__(self, "dp_group", dp_group)
        object.__setattr__(self, "moe_group", g)
        object.__setattr__(self, "expert_share", self.tp / g)
        hot = 0.0
        if self.expert_parallel and g > 1 and m.is_moe and self.expert_load_imbalance != 1.0:
            hot = (self.expert_load_imbalance - 1.0) * 2.0 * m.n_moe_layers * m.n_experts_per_tok * m.expert_params
        object.__setattr__(self, "hot_expert_flops_per_token", hot)
        remote = 0.0
        if m.is_moe:
            e, k, per = m.n_experts, m.n_experts_per_tok, m.n_experts // g
            miss = 1.0
            for i in range(k):
                miss *= max(0, e - per - i) / (e - i)
            remote = (g - 1) * (1.0 - miss)
        object.__setattr__(self, "remote_expert_gpus", remote)
        routed = 2.0 * m.n_moe_layers * m.n_experts_per_tok * m.expert_params if m.is_moe else 0.0
        object.__setattr__(self, "routed_flops_per_token", routed)
        object.__setattr__(self, "attention_time_factor", attention_time_factor(self.gpu, self.compute_dtype, self.kv_bits))
        stages = stage_weight_bytes(m, self.weight_bits, self.pp) if self.pp > 1 else (self.weight_bytes,)
        object.__setattr__(self, "stage_weights", stages)
        object.__setattr__(self, "layer_units", m.layer_units(self.compute_dtype != "bf16"))

    def group_tokens(self, n_tokens: int, group_tokens: int | None) -> int:
        """The tokens a step of a DP group sharing the MoE layers puts through them: as given (the group's ranks'
        steps, `sim.run.engine.lockstep`), else `dp` times this rank's (each rank alike)."""
        return group_tokens if group_tokens is not None else n_tokens * self.dp

    def moe_time_flops(self, n_tokens: int, group_tokens: int | None = None) -> float:
        """FLOPs the step's time counts beyond its own tokens' (`n_tokens` x `flops_per_token`), in the replica's units:
        in a DP group the routed experts' work is spread over the group's GPUs, so this rank's GPUs do the group's
        mean share of it (the group's tokens / dp, less its own), and the hottest GPU `expert_load_imbalance` times
        the mean. Time only: the FLOPs counted stay the tokens' own."""
        hot = self.hot_expert_flops_per_token
        if self.moe_group == self.tp:
            return n_tokens * hot
        m = self.model
        mean = self.group_tokens(n_tokens, group_tokens) / self.dp
        return (mean - n_tokens) * 2.0 * m.n_moe_layers * m.n_experts_per_tok * m.expert_params + mean * hot

    def comm_s(self, n_tokens: int, group_tokens: int | None = None) -> float:
        """A step's communication for `n_tokens`: two all-reduces per layer within the replica's TP group; with a
        DP group sharing the MoE layers, each MoE layer's instead moves the tokens between the group's GPUs
        (`moe_exchange_s`, the group's step putting `group_tokens` through them) and only attention's all-reduce
        stays."""
        if not self.comm or n_tokens <= 0:
            return 0.0
        m = self.model
        ar = self.allreduce_s(n_tokens * m.hidden_size * self.activation_bits / 8) if self.tp > 1 else 0.0
        stages = self.stage_transfer_s(n_tokens) if self.pp > 1 else 0.0
        if self.moe_group == self.tp:
            return 2 * m.n_layers * ar + stages
        return (2 * m.n_layers - m.n_moe_layers) * ar + m.n_moe_layers * self.moe_exchange_s(n_tokens, group_tokens) + stages

    def stage_links(self) -> tuple[int, int]:
        """(in-node, across-node) boundaries between the pipeline's pp stages: stages of tp GPUs packed onto nodes of
        `gpus_per_node` (a stage spanning nodes is its own TP group's matter, `allreduce_s`)."""
        per_node = max(1, self.gpus_per_node // self.tp)
        across = -(-self.pp // per_node) - 1
        return self.pp - 1 - across, across

    def stage_seconds_per_byte(self) -> float:
        """The in-node pipeline boundaries' seconds per byte sent, summed: stage s on GPUs s x tp ... of its node (stages
        packed as `stage_links` packs them) sends to the next stage's GPUs over the link between them
        (`GpuSpec.p2p_bw_bytes_per_s`: a bridged pair's NVLink, or PCIe past it)."""
        per_node = max(1, self.gpus_per_node // self.tp)
        total = 0.0
        for b in range(self.pp - 1):
            s = b % per_node
            if s + 1 < per_node:  # (the last stage of a node sends across nodes: `across_nodes`)
                total += 1.0 / self.gpu.p2p_bw_bytes_per_s(s * self.tp, (s + 1) * self.tp)
        return total

    def stage_transfer_s(self, n_tokens: int) -> float:
        """A step's sends between pipeline stages: each boundary sends the step's hidden states (n x hidden at the
        activations' precision) from each GPU of a stage to its peer in the next, a point-to-point send at the node's
        link (latency as a collective's) or across nodes at the slowest link on the way (`across_nodes`)."""
        inside, across = self.stage_links()
        n_bytes = n_tokens * self.model.hidden_size * self.activation_bits / 8
        t = 0.0
        if inside:
            t += inside * self.gpu.allreduce_latency_s + n_bytes * self.stage_seconds_per_byte()
        if across:
            bw, lat = self.across_nodes(self.tp * self.pp)
            t += across * (lat + n_bytes / bw)
        return t

    def moe_exchange_s(self, n_tokens: int, group_tokens: int | None = None) -> float:
        """One MoE layer's token exchange across the DP group's G = dp x tp GPUs (alpha-beta, over the node's
        interconnect, or, when G exceeds a node, its slowest link: `across_nodes`), the group's step putting `group_tokens`
        through it (default: dp times this rank's).
        - `allgather_reducescatter` (vLLM's default `--all2all-backend`, and its only exchange for experts sharded by
          tensor parallelism): the group's hidden states and router logits all-gathered onto every GPU before the
          experts, their outputs reduce-scattered after, each a ring moving (G-1)/G of the group's tokens per GPU,
          however they are routed.
        - a per-destination dispatch and combine (expert parallel with DeepEP or pplx): each GPU sends each of its
          tokens' hidden states once to every other GPU holding one of its top-k experts (`remote_expert_gpus`) and
          receives the group's mean share (the hottest GPU `expert_load_imbalance` times it); the busier side sets the
          time."""
        m, g = self.model, self.moe_group
        per_token = m.hidden_size * self.activation_bits / 8
        total = self.group_tokens(n_tokens, group_tokens)
        if self.expert_parallel and self.all2all != "allgather_reducescatter":
            busiest = max(n_tokens, total / self.dp * self.expert_load_imbalance)
            per_gpu = 2 * busiest / self.tp * self.remote_expert_gpus * per_token  # dispatch, then combine
        else:  # the gather carries each token's router logits too
            per_gpu = total * (2 * per_token + m.n_experts * self.activation_bits / 8) * (g - 1) / g
        if g <= self.gpus_per_node:
            bw, lat = self.gpu.group_collective_bw_bytes_per_s(g), self.gpu.allreduce_latency_s
        else:
            bw, lat = self.across_nodes(g)
        return 2 * lat + per_gpu / bw

    @property
    def n_nodes(self) -> int:
        return -(-self.tp // self.gpus_per_node)

    def across_nodes(self, n_gpus: int) -> tuple[float, float]:
        """(bytes/s, latency s) of a collective over `n_gpus` whose ring spans nodes: its slowest link sets the pace, so
        the lower of the scale-out network's bandwidth and the node's own collective bandwidth (for the node's share of
        the group), and the higher of their latencies
        (the ring still crosses each node's link: over a host-staged PCIe box, 14.5 GB/s and 42 us, the network's
        50 GB/s and 20 us would otherwise make a group spanning two nodes faster than one inside a node). A card whose
        catalog entry gives its PCIe link past a bridge (`pcie_bw_bytes_per_s`) reaches the network over that link, at what a
        ring reaches over it in the node (`GpuSpec.past_bridge_bw_bytes_per_s`): nodes of one bridged pair of A100 PCIe cards each would otherwise ring at the network's 50 GB/s,
        faster than four cards in one node over their 32 GB/s of PCIe."""
        gpu = self.gpu
        bw = min(self.scale_out_bytes_per_s, gpu.group_collective_bw_bytes_per_s(min(n_gpus, self.gpus_per_node)))
        bw = min(bw, gpu.past_bridge_bw_bytes_per_s)  # (what a ring reaches over that PCIe link, as inside the node)
        return bw, max(self.scale_out_latency_s, gpu.allreduce_latency_s)

    def allreduce_s(self, n_bytes: float) -> float:
        """One all-reduce of `n_bytes` over the replica's TP group: within a node over its interconnect
        (`allreduce_time_s`); across nodes the ring runs at its slowest link's bandwidth and latency (`across_nodes`;
        NCCL's inter-node ring/tree, alpha-beta)."""
        if self.tp <= self.gpus_per_node:
            return allreduce_time_s(self.gpu, tp=self.tp, n_bytes=n_bytes)
        bw, lat = self.allreduce_link()
        return lat + 2 * (self.tp - 1) / self.tp * n_bytes / bw

    def allreduce_link(self) -> tuple[float, float]:
        """(bus bytes/s, latency s) the TP group's all-reduces are priced at (`allreduce_s`): the node's link, or across
        nodes the ring's slowest (`across_nodes`)."""
        if self.tp <= self.gpus_per_node:
            return self.gpu.group_collective_bw_bytes_per_s(self.tp), self.gpu.allreduce_latency_s
        return self.across_nodes(self.tp)

    @property
    def peak_flops_per_s(self) -> float:
        return self.gpu.peak_flops_per_s(self.compute_dtype)

    @property
    def weight_bytes(self) -> float:
        """Weight bytes this replica holds: the whole model, less the routed experts other DP ranks hold."""
        whole = self.model.weight_bytes(self.weight_bits)
        if self.moe_group == self.tp:
            return whole
        expert_bits = self.model.part_bits(self.weight_bits)[2]
        return whole - self.model.routed_expert_params * expert_bits / 8 * (1 - self.expert_share)

    @property
    def held_weight_bytes(self) -> float:
        """Weight bytes this replica's GPUs hold: `weight_bytes`; a pipeline's virtual engine, the heaviest stage's (the
        stage whose GPUs have the least memory left: `stage_weight_bytes`; its step still reads every stage's)."""
        return max(self.stage_weights)

    @property
    def context_tokens(self) -> int:
        """The longest prompt + output a replica serves: the engine's max_model_len, else the model's context."""
        return self.max_model_len if self.max_model_len is not None else self.model.max_context_tokens

    @property
    def weight_words(self) -> str:
        """The weights' precision in words ("16-bit", "fp8 (as shipped)", "mxfp4 experts (as shipped)")."""
        if self.weight_bits is not None:
            return f"{self.weight_bits:g}-bit"
        if not self.model.shipped_quant:
            return "16-bit"
        return f"{self.model.shipped_words} (as shipped)"

    @property
    def kv_bytes_per_token(self) -> float:
        """KV bytes one token occupies on the replica (all TP ranks, replicas of heads included)."""
        return self.model.kv_bytes_per_token(self.kv_bits) * self.model.kv_replication(self.tp)

    @property
    def kv_groups(self) -> tuple[int, int, int]:
        """vLLM's hybrid KV cache manager (vllm/v1/core/kv_cache_utils.py, `_get_kv_cache_groups_uniform_page_size`)
        for a model with full- and sliding-window attention layers: (layers a group, full-attention groups, sliding
        groups). The group size is the smaller layer count (the larger when it is under 1.5x the smaller: gpt-oss's
        equal halves, one group each); each group's block table is its own, its blocks from one shared pool, a block
        one page per layer of a group. One attention type (sliding-window layers alone counted as full here), or the
        manager turned off (`hybrid_kv`: vLLM then keeps a sliding layer's KV as a full-attention one's): one group of
        every layer."""
        m = self.model
        sliding = m.n_sliding_layers if m.sliding_window and self.hybrid_kv else 0
        full = m.n_layers - sliding
        if not sliding or not full:
            return m.n_layers, 1, 0
        lo, hi = min(full, sliding), max(full, sliding)
        size = hi if hi < lo * 1.5 else lo
        return size, -(-full // size), -(-sliding // size)

    @property
    def kv_pool_bytes_per_token(self) -> float:
        """Bytes of the KV cache's blocks per token slot, a block counted as the engine counts one: a sequence holds
        ceil(tokens / block size) of them for its full-attention layers (the full groups' pages together), plus its
        window's (`window_blocks`). Without sliding-window layers, `kv_bytes_per_token`."""
        size, full, _ = self.kv_groups
        return self.kv_bytes_per_token * size * full / self.model.n_layers

    def window_blocks(self, block_size: int) -> int:
        """Blocks (of `kv_pool_bytes_per_token`) a sequence's sliding-window groups hold: each the blocks that
        cover its last `sliding_window` tokens, at most ceil((window - 1) / block size) + 1 (vLLM's
        SlidingWindowManager frees those wholly before them), and no more than its longest context's. Counted
        whatever its length: an upper bound for a sequence shorter than the window (by its blocks short of it, a
        sliding group). 0 without sliding-window layers."""
        _, full, sliding = self.kv_groups
        if not sliding:
            return 0
        per_group = min(-(-(self.model.sliding_window - 1) // block_size) + 1, -(-self.context_tokens // block_size))
        return -(-sliding * per_group // full)

    @property
    def usd_per_replica_s(self) -> float | None:
        if self.usd_per_gpu_hour is None:
            return None
        return self.usd_per_gpu_hour * self.tp / 3600.0


@dataclass(frozen=True, slots=True)
class StepCost:
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float  # fixed: per step plus per layer
    overlap: float = 1.0
    # an MoE model's routed experts, a roofline of their own (`compute_s` and `memory_s` are then the rest's)
    expert_compute_s: float = 0.0
    expert_memory_s: float = 0.0

    @property
    def experts_s(self) -> float:
        return combine(self.expert_compute_s, self.expert_memory_s, self.overlap)

    @property
    def time_s(self) -> float:
        # (the experts' seconds with the communication's: the engine's memoized terms hold them so, the same floats)
        return combine(self.compute_s, self.memory_s, self.overlap) + (self.comm_s + self.experts_s) + self.overhead_s

    @property
    def compute_bound(self) -> bool:
        return self.compute_s >= self.memory_s


def combine(compute_s: float, memory_s: float, overlap: float) -> float:
    """Compute and memory time of one step, `overlap` of the shorter hidden under the longer."""
    if overlap == 1.0:
        return max(compute_s, memory_s)
    if compute_s >= memory_s:
        return compute_s + (1.0 - overlap) * memory_s
    return memory_s + (1.0 - overlap) * compute_s


def attention_dtype(gpu: GpuSpec, compute_dtype: str, kv_bits: int) -> str:
    """The precision attention's matmuls run in: FP8 where the GEMMs run below BF16 and the KV cache is FP8 on a GPU
    with FP8 tensor cores (vLLM quantizes the query to FP8 for FlashAttention 3 with an FP8 KV cache), else BF16
    (vLLM's attention backends take BF16 queries and keys whatever the checkpoint's GEMMs run in)."""
    if compute_dtype != "bf16" and kv_bits == 8 and gpu.fp8_flops_per_s is not None:
        return "fp8"
    return "bf16"


def attention_time_factor(gpu: GpuSpec, compute_dtype: str, kv_bits: int) -> float:
    """The GEMMs' peak over attention's (`attention_dtype`): how many times their time at the GEMMs' rate attention's
    FLOPs take (1.0 when both run in the same precision)."""
    attn = attention_dtype(gpu, compute_dtype, kv_bits)
    if attn == compute_dtype:
        return 1.0
    return gpu.peak_flops_per_s(compute_dtype) / gpu.peak_flops_per_s(attn)


def fixed_overhead_s(setup: RooflineSetup) -> float:
    """Seconds every step costs whatever its size: per layer (by its kernels, `RooflineSetup.layer_units`) plus per
    step."""
    return setup.layer_units * setup.layer_overhead_s + setup.step_overhead_s


def scheduled_seqs(logit_tokens: int | None, n_decode_seqs: int, n_prefill_tokens: int) -> int:
    """The sequences a step schedules, as a host cost a sequence counts them when the caller does not say: one per
    logit position (one per scheduled sequence), else the decoders plus one for any prefill tokens."""
    if logit_tokens is not None:
        return logit_tokens
    return n_decode_seqs + (1 if n_prefill_tokens else 0)


def host_overhead_s(setup: RooflineSetup, seqs: int) -> float:
    """Host seconds a step of `seqs` scheduled sequences adds beyond `fixed_overhead_s` (0.0 without a per-sequence cost)."""
    return setup.seq_overhead_s * seqs if setup.seq_overhead_s else 0.0


def expected_experts_touched(model: ModelSpec, n_tokens: int) -> float:
    """Mean number of distinct routed experts per MoE layer hit by `n_tokens` tokens (uniform routing)."""
    if not model.is_moe or n_tokens <= 0:
        return 0.0
    e, k = model.n_experts, model.n_experts_per_tok
    return e * (1.0 - (1.0 - k / e) ** n_tokens)


def weight_bytes_read(setup: RooflineSetup, n_tokens: int, group_tokens: int | None = None) -> float:
    """Weight bytes a step reads: all of them for a dense model; MoE reads only touched experts (in a DP group, its
    share of those the group's step touches: `group_tokens`, default dp times this rank's)."""
    if not setup.model.is_moe:
        return setup.weight_bytes
    return resident_bytes_read(setup) + expert_bytes_read(setup, n_tokens, group_tokens)


def resident_bytes_read(setup: RooflineSetup) -> float:
    """Weight bytes every step reads whatever its tokens: all but the routed experts (a dense model's all)."""
    model = setup.model
    if not model.is_moe:
        return setup.weight_bytes
    expert_bits = model.part_bits(setup.weight_bits)[2]
    return setup.weight_bytes - model.routed_expert_params * expert_bits / 8 * setup.expert_share


def expert_bytes_read(setup: RooflineSetup, n_tokens: int, group_tokens: int | None = None) -> float:
    """The routed experts' weight bytes a step reads: those its tokens touch (in a DP group, this replica's share of
    those the group's step touches: `group_tokens`, default dp times this rank's); 0 for a dense model."""
    model = setup.model
    if not model.is_moe:
        return 0.0
    expert_bytes = model.expert_params * model.part_bits(setup.weight_bits)[2] / 8
    if setup.moe_group == setup.tp:
        return model.n_moe_layers * expected_experts_touched(model, n_tokens) * expert_bytes
    group_touched = expected_experts_touched(model, setup.group_tokens(n_tokens, group_tokens))
    return model.n_moe_layers * group_touched * expert_bytes * setup.expert_share


def expert_costs(setup: RooflineSetup, n_tokens: int, group_tokens: int | None = None) -> tuple[float, float]:
    """An MoE step's routed experts as their own roofline: (compute seconds, memory seconds). The FLOPs are the tokens'
    own (`routed_flops_per_token`) plus, in a DP group or with a hot GPU, what `RooflineSetup.moe_time_flops` adds (in
    a DP group: the group's mean share, so the part depends on the group's tokens alone); the bytes
    `expert_bytes_read`. (0, 0) for a dense model."""
    if not setup.model.is_moe or n_tokens <= 0:
        return 0.0, 0.0
    if setup.moe_group == setup.tp:
        flops = n_tokens * setup.routed_flops_per_token + setup.moe_time_flops(n_tokens, group_tokens)
    else:  # a DP group: the group's mean share, the hottest GPU's excess on it (a function of the group's tokens alone)
        mean = setup.group_tokens(n_tokens, group_tokens) / setup.dp
        flops = mean * setup.routed_flops_per_token + mean * setup.hot_expert_flops_per_token
    n_bytes = expert_bytes_read(setup, n_tokens, group_tokens)
    return flops / (setup.tp * setup.effective_flops_per_s), n_bytes / (setup.tp * setup.effective_hbm_bw_bytes_per_s)


def experts_s(setup: RooflineSetup, n_tokens: int, group_tokens: int | None = None) -> float:
    """Seconds of an MoE step's routed experts (`expert_costs`, combined with the setup's overlap); 0 for a dense
    model."""
    return combine(*expert_costs(setup, n_tokens, group_tokens), setup.overlap)


def allreduce_time_s(gpu: GpuSpec, *, tp: int, n_bytes: float) -> float:
    """All-reduce of `n_bytes` over `tp` GPUs, alpha-beta: a fixed latency per collective plus the ring's
    2(tp-1)/tp of the data at the bus bandwidth NCCL reaches on the GPU's link (`collective_bw_bytes_per_s`: its
    measured figure at the 1-64 MB a prefill chunk's all-reduces carry, else one direction of the datasheet's link; over
    PCIe past the GPUs a bridge joins: `group_collective_bw_bytes_per_s`).
    """
    if tp <= 1:
        return 0.0
    return gpu.allreduce_latency_s + 2 * (tp - 1) / tp * n_bytes / gpu.group_collective_bw_bytes_per_s(tp)


def unsampled_logit_flops(setup: RooflineSetup, n_tokens: int, logit_tokens: int | None) -> float:
    """The LM-head FLOPs a step does not spend: its positions with no sampled token (0 when every token is priced)."""
    if logit_tokens is None or not setup.logits_sampled_only or logit_tokens >= n_tokens:
        return 0.0
    return (n_tokens - logit_tokens) * setup.model.logit_flops_per_token


def windowed(
    model: ModelSpec, n_tokens: int, pairs: float, kv_read: float, decode_seqs: int, decode_context: float
) -> tuple[float, float]:
    """A step's attention pairs and KV tokens read, as the layers count them on average, with sliding-window layers
    (`ModelSpec.sliding_share` of them): a query there attends to at most `sliding_window` keys, and a decoding
    sequence reads at most that many cached tokens. Counted on the step's sums (the pairs against `n_tokens` x window,
    the decoders' cached tokens against `decode_seqs` x window), so exact when every query is past the window (or
    none is), an upper bound otherwise; the prompt chunks' cached tokens are read whole (a prefill step is bound by
    its compute). The sums unchanged without a window."""
    share = model.sliding_share
    if not share:
        return pairs, kv_read
    w = model.sliding_window
    cap = n_tokens * w
    if pairs > cap:
        pairs -= share * (pairs - cap)
    cap = decode_seqs * w
    if decode_context > cap:
        kv_read -= share * (decode_context - cap)
    return pairs, kv_read


def step_cost(
    setup: RooflineSetup,
    *,
    n_tokens: int,
    attention_pairs: float,
    kv_read_tokens: float,
    logit_tokens: int | None = None,
    decode_pairs: float = 0.0,
    context_tokens: float = 0.0,
    group_tokens: int | None = None,
    decode_seqs: int = 0,
    decode_context_tokens: float = 0.0,
    seqs: int | None = None,
) -> StepCost:
    """Cost of one forward step; see the module docstring for the terms. `logit_tokens`: the positions the LM head
    runs on (one per scheduled sequence; None: every token). Of the `attention_pairs`, `decode_pairs` are decoding
    queries' (`ModelSpec.decode_attention_flops_per_pair`); `context_tokens`: the cached tokens prefill chunks attend
    to (`ModelSpec.context_flops_per_token`). Both matter only with MLA. `decode_seqs` decoders, whose cached tokens
    (`decode_context_tokens`, of the `kv_read_tokens`) sliding-window layers read up to their window (`windowed`).
    `seqs`: the sequences scheduled, which the host cost a sequence counts (None: `scheduled_seqs`; a
    speculative verify gives its sequences, its logit positions being k + 1 each; a draft step 0: it runs in the
    verify's step)."""
    model, tp = setup.model, setup.tp
    attention_pairs, kv_read_tokens = windowed(
        model, n_tokens, attention_pairs, kv_read_tokens, decode_seqs, decode_context_tokens
    )
    flops = n_tokens * model.flops_per_token - unsampled_logit_flops(setup, n_tokens, logit_tokens)
    # FLOPs the compute time counts beyond the step's own: less the routed experts' (priced apart), plus attention's
    # share again where it runs below the GEMMs' precision (the engine's `RooflineStepTime.step` adds them alike)
    hot = -(n_tokens * setup.routed_flops_per_token)
    if setup.attention:
        attn = attention_pairs * model.attention_flops_per_pair
        flops += attn
        if model.mla is not None:
            decode = decode_pairs * (model.decode_attention_flops_per_pair - model.attention_flops_per_pair)
            context = context_tokens * model.context_flops_per_token
            flops += decode
            flops += context
            attn = attn + decode  # (the cached context's up-projection is kv_b_proj, a GEMM at the GEMMs' rate)
        if setup.attention_time_factor != 1.0:
            hot = hot + (setup.attention_time_factor - 1.0) * attn
    kv_bytes = setup.kv_bytes_per_token * (kv_read_tokens + n_tokens)
    n_bytes = weight_bytes_read(setup, n_tokens, group_tokens) + kv_bytes
    comm_s = setup.comm_s(n_tokens, group_tokens)
    # the routed experts on their own (module docstring): the rest's FLOPs and bytes without them (a dense model's all)
    expert_c, expert_m = expert_costs(setup, n_tokens, group_tokens)
    return StepCost(
        flops=flops,
        bytes=n_bytes,
        compute_s=(flops + hot) / (tp * setup.effective_flops_per_s),
        memory_s=(resident_bytes_read(setup) + kv_bytes) / (tp * setup.effective_hbm_bw_bytes_per_s),
        comm_s=comm_s,
        overhead_s=fixed_overhead_s(setup)
        + host_overhead_s(setup, seqs if seqs is not None else scheduled_seqs(logit_tokens, decode_seqs, n_tokens - decode_seqs)),
        overlap=setup.overlap,
        expert_compute_s=expert_c,
        expert_memory_s=expert_m,
    )


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise FleetsimError(f"{name} must be >= 1 (got {value})")


def prefill_cost(setup: RooflineSetup, *, prompt_tokens: int, batch: int = 1, cached_tokens: int = 0) -> StepCost:
    """One step that prefills `batch` prompts of `prompt_tokens` each (after `cached_tokens`)."""
    _positive("prompt_tokens", prompt_tokens)
    _positive("batch", batch)
    pairs_per_seq = prompt_tokens * cached_tokens + prompt_tokens * (prompt_tokens + 1) / 2
    return step_cost(
        setup,
        n_tokens=batch * prompt_tokens,
        attention_pairs=batch * pairs_per_seq,
        kv_read_tokens=batch * cached_tokens,
        logit_tokens=batch,
        context_tokens=batch * cached_tokens,
    )


def prefill_time_s(setup: RooflineSetup, *, prompt_tokens: int, batch: int = 1, cached_tokens: int = 0) -> float:
    return prefill_cost(setup, prompt_tokens=prompt_tokens, batch=batch, cached_tokens=cached_tokens).time_s


def decode_cost(setup: RooflineSetup, *, batch: int, context_tokens: int) -> StepCost:
    """One decode step of `batch` sequences, each with `context_tokens` already in its KV cache."""
    _positive("batch", batch)
    if context_tokens < 0:
        raise FleetsimError(f"context_tokens must be >= 0 (got {context_tokens})")
    return step_cost(
        setup,
        n_tokens=batch,
        attention_pairs=batch * (context_tokens + 1),
        kv_read_tokens=batch * context_tokens,
        logit_tokens=batch,
        decode_pairs=batch * (context_tokens + 1),
        decode_seqs=batch,
        decode_context_tokens=batch * context_tokens,
    )


def decode_step_time_s(setup: RooflineSetup, *, batch: int, context_tokens: int) -> float:
    return decode_cost(setup, batch=batch, context_tokens=context_tokens).time_s


def decode_tokens_per_s(setup: RooflineSetup, *, batch: int, context_tokens: int) -> float:
    return batch / decode_step_time_s(setup, batch=batch, context_tokens=context_tokens)


def prompt_tokens_per_s(setup: RooflineSetup, *, prompt_tokens: int) -> float:
    return prompt_tokens / prefill_time_s(setup, prompt_tokens=prompt_tokens)


def usd_per_1k_tokens(setup: RooflineSetup, tokens_per_s: float) -> float | None:
    usd_per_s = setup.usd_per_replica_s
    return None if usd_per_s is None else usd_per_s / tokens_per_s * 1000


# --- memory --------------------------------------------------------------------------------
# vLLM (v1, 0.18+; vllm/v1/worker/gpu_worker.py determine_available_memory, vllm/utils/mem_utils.py) sizes its KV
# cache per GPU as ceil(total x gpu_memory_utilization) - (weights + torch peak increase + non-torch increase),
# measured while it profiles one forward pass of max_num_batched_tokens tokens and one sampler run:
NON_TORCH_BYTES = 0.14 * 2**30  # cuBLAS workspaces, kernel modules: 0.13-0.14 GiB logged at TP 1 on H100 (vLLM
# 0.11, llm-d-benchmark's empirical-vllm-memory-results) and ~0.15 GiB implied on an RTX 3090 (0.17.1)
# A GPU in a group (TP, a pipeline's stages, an MoE model's DP ranks) holds its communicators' buffers besides, outside
# torch: NCCL's (and vLLM's custom all-reduce's) inside a node, 0.55 GiB logged at TP 2 on H100 (the same results;
# llm-d's capacity planner takes 0.6 for any TP of 2 or more); NCCL's network transport's too where the group spans
# nodes, 2.11-2.24 GiB logged by the workers of a pipeline's later stage across two A100 nodes over InfiniBand (vLLM
# 0.8.3: Llama-3.3-70B TP 4 x PP 2 and DeepSeek-V2.5 TP 8 x PP 2, surajssd/llm-k8s lws-run-1.sh and lws.sh), against
# 0.89-1.07 on the first stage's; vLLM gives every worker the blocks the one with the least memory allows
NON_TORCH_GROUP_BYTES = 0.55 * 2**30
NON_TORCH_CROSS_NODE_BYTES = 2.24 * 2**30
CUDA_GRAPH_BYTES = 0.45 * 2**30  # CUDA graphs captured inside the profiled window (0.18+: profile_cudagraph_memory
# runs there): 0.45 GiB logged for Llama-3.1-8B's graphs on H100 (vLLM 0.11, the same results)
SAMPLER_BYTES_PER_ROW = 14  # per vocabulary entry per sampled row: the logits' fp32 copy, probabilities, top-k/p
# buffers of the Triton sampler (0.17+); plus one fp32 row per SM, up to the rows sampled (rounded up to a power of 2)


def memory_budget_bytes(setup: RooflineSetup) -> float:
    """The memory the engine may use on all its GPUs: `gpu_memory_utilization` of each one's total (vLLM: of the
    total the driver reports, rounded up to a byte; the flat model: of the datasheet's)."""
    if setup.kv_memory == "vllm":
        return setup.tp * math.ceil(setup.gpu.total_memory_bytes * setup.gpu_memory_utilization)
    return setup.tp * setup.gpu.hbm_bytes * setup.gpu_memory_utilization


def activation_peak_bytes(setup: RooflineSetup) -> float:
    """Per GPU, the torch memory vLLM's profiling run peaks at above the weights: the larger of one forward pass of
    `profile_tokens` tokens (hidden and residual streams, the MLP's gate/up output and its activation: N (2H + 3I/tp)
    activations) and the last hidden states plus one sampler run over `profile_seqs` rows of the vocabulary."""
    m = setup.model
    n, rows = setup.profile_tokens, min(setup.profile_seqs, setup.profile_tokens)
    act = setup.activation_bits / 8
    inner = (m.moe_intermediate_size or m.intermediate_size) * (m.n_experts_per_tok if m.is_moe else 1)
    forward = n * (2 * m.hidden_size + 3 * inner / setup.tp) * act
    sm_rows = min(1 << max(0, min(setup.gpu.sm_count, rows) - 1).bit_length(), setup.gpu.sm_count)
    sampler = SAMPLER_BYTES_PER_ROW * rows * m.vocab_size + 4 * sm_rows * m.vocab_size
    return max(forward, n * m.hidden_size * act + sampler)


def non_torch_bytes(setup: RooflineSetup) -> float:
    """Per GPU, the memory outside torch that vLLM's profiling counts against the KV cache (see above): one GPU's
    runtime workspaces, plus its communicators' buffers in a group of GPUs, more where the group spans nodes (a TP or
    MoE group larger than a node, or pipeline stages on different nodes)."""
    if setup.tp * setup.pp * setup.dp_group == 1:
        return NON_TORCH_BYTES
    spans = setup.tp > setup.gpus_per_node or setup.moe_group > setup.gpus_per_node or setup.stage_links()[1] > 0
    return NON_TORCH_CROSS_NODE_BYTES if spans else NON_TORCH_GROUP_BYTES


def engine_overhead_bytes(setup: RooflineSetup) -> float:
    """All GPUs' memory the engine takes besides weights and KV cache: vLLM's profiled activation peak, non-torch
    memory and CUDA graphs (0 in the flat model, which has only `memory_reserve_bytes`)."""
    if setup.kv_memory != "vllm":
        return 0.0
    rope = setup.model.max_context_tokens * setup.model.head_dim * 2  # the rotary cos/sin cache, a model buffer
    per_gpu = activation_peak_bytes(setup) + non_torch_bytes(setup) + (CUDA_GRAPH_BYTES if setup.cuda_graphs else 0.0) + rope
    return setup.tp * per_gpu


def kv_capacity_bytes(setup: RooflineSetup) -> float:
    """Memory left for the KV cache: the usable share of all TP GPUs minus the weights, the engine's own memory
    (vLLM's accounting, see above) and the reserve. A pipeline's virtual engine: its share of the server's cache, in
    bytes of the whole model's KV. vLLM gives every stage the same number of blocks, the fewest any stage's GPUs hold
    (each stage's memory left over its own layers' KV a block), and its pp engines split them."""
    rest = engine_overhead_bytes(setup) + setup.memory_reserve_bytes
    if setup.pp == 1:
        return memory_budget_bytes(setup) - setup.held_weight_bytes - rest
    layers, budget = setup.model.n_layers, memory_budget_bytes(setup)
    return min(
        (budget - w - rest) * layers / (n * setup.pp)
        for w, n in zip(setup.stage_weights, pp_stage_layers(layers, setup.pp), strict=True)
    )


def pp_stage_layers(n_layers: int, pp: int) -> tuple[int, ...]:
    """The decoder layers of each of pp stages as vLLM splits them by default (`vllm.distributed.utils.get_pp_indices`):
    n // pp each, the remainder one each to the stages before the last, from the second-to-last back (5 layers in 3
    stages: 2, 2, 1)."""
    base, extra = divmod(n_layers, pp)
    parts = [base] * pp
    for i in range(2, extra + 2):
        parts[-i] += 1
    return tuple(parts)


def stage_weight_bytes(model: ModelSpec, weight_bits: float | None, pp: int) -> tuple[float, ...]:
    """Each pipeline stage's weight bytes: its layers (`pp_stage_layers`; an MoE model's dense and expert layers where
    they sit: `ModelSpec.moe_layer_set`), the input embedding on the first stage, the final norm and the LM head on the
    last (a tied embedding there too once the stages are two or more: vLLM loads the last stage's head from it)."""
    embed, linear, experts = model.part_bits(weight_bits)
    moe = model.moe_layer_set
    dense_linear, _ = model.layer_params(False)
    moe_linear, moe_experts = model.layer_params(True) if model.is_moe else (0, 0)
    head = model.vocab_size * model.hidden_size if (not model.tie_embeddings or pp > 1) else 0
    out, start = [], 0
    for s, n in enumerate(pp_stage_layers(model.n_layers, pp)):
        k = sum(1 for i in range(start, start + n) if i in moe)
        b = ((n - k) * dense_linear + k * moe_linear) * linear / 8 + k * moe_experts * experts / 8
        if s == 0:
            b += model.embedding_params * embed / 8
        if s == pp - 1:
            b += model.hidden_size * linear / 8 + head * embed / 8
        out.append(b)
        start += n
    return tuple(out)


def kv_capacity_tokens(setup: RooflineSetup) -> int:
    """Token slots the KV cache holds (with sliding-window layers: of the full-attention layers, each sequence's
    window held besides: `RooflineSetup.kv_pool_bytes_per_token`)."""
    return max(0, math.floor(kv_capacity_bytes(setup) / setup.kv_pool_bytes_per_token))


def max_batch(setup: RooflineSetup, *, context_tokens: int) -> int:
    """Most sequences of `context_tokens` each whose KV fits at once (with sliding-window layers, each also holding
    its last min(context, window) tokens in each sliding group, counted in the full groups' units)."""
    _positive("context_tokens", context_tokens)
    _, full, sliding = setup.kv_groups
    window = -(-sliding * min(setup.model.sliding_window, context_tokens) // full) if sliding else 0
    return kv_capacity_tokens(setup) // (context_tokens + window)


def check_fits(setup: RooflineSetup) -> None:
    """Raise, saying by how much, unless the weights plus reserve leave room for KV cache."""
    if kv_capacity_tokens(setup) >= 1:
        return
    engine = engine_overhead_bytes(setup)
    need = setup.held_weight_bytes + engine + setup.memory_reserve_bytes
    have = memory_budget_bytes(setup)
    # the profiling run's activations grow with max_num_batched_tokens: past the weights, they are what to lower
    activations = setup.tp * activation_peak_bytes(setup) if engine else 0.0
    hint = (
        f"lower engine.max_num_batched_tokens (the profiling run's {setup.profile_tokens:,} tokens take "
        f"{activations / GIGA:.1f} GB of activations), raise tp or lower weight_bits"
        if activations > setup.held_weight_bytes
        else "raise tp or lower weight_bits"
    )
    where = f"{setup.tp}x {setup.gpu.name}" + (f" (a virtual engine's share of {setup.pp} stages)" if setup.pp > 1 else "")
    raise FleetsimError(
        f"{setup.model.name} does not fit on {where}: weights at {setup.weight_words}"
        f"{' + the engine (activations, CUDA graphs)' if engine else ''}"
        f"{' + reserve' if setup.memory_reserve_bytes else ''} need {need / GIGA:.1f} GB, the GPUs offer "
        f"{have / GIGA:.1f} GB at gpu_memory_utilization={setup.gpu_memory_utilization:g} "
        f"(short by {(need - have) / GIGA:.1f} GB, before any KV cache); {hint}"
    )


def check_step_time(setup: RooflineSetup) -> None:
    """Raise unless one decode step of one request takes at most `MAX_STEP_OVERHEAD_S` (an hour): slower comes of a
    hardware figure within its bounds but far from any GPU's (0.001 GB/s), and a run would go on for years of
    simulated time before failing on its length."""
    t = decode_step_time_s(setup, batch=1, context_tokens=0)
    if t > MAX_STEP_OVERHEAD_S:
        raise FleetsimError(
            f"one decode step of one request of {setup.model.name} on {setup.tp}x {setup.gpu.name} takes "
            f"{f'{t:,.0f}' if t < 1e15 else f'{t:.3g}'} s "
            f"(effective {setup.effective_flops_per_s / 1e12:g} TFLOP/s, {setup.effective_hbm_bw_bytes_per_s / GIGA:g} "
            f"GB/s per GPU), more than {MAX_STEP_OVERHEAD_S:,.0f} s; check the GPU's figures (roofline.gpu_overrides, "
            "mfu, mbu, overheads)"
        )


# --- balance points ----------------------------------------------------------------------------
def crossover_prompt_tokens(setup: RooflineSetup, *, peak: bool = True) -> float:
    """Prompt length above which a single prefill is compute-bound (weights read once vs 2P·N FLOPs).

    At peak rates (the seed article's 312 TFLOP/s / 2 TB/s -> 156) or at the effective ones.
    """
    if peak:
        flops, bw = setup.peak_flops_per_s, setup.gpu.hbm_bw_bytes_per_s
    else:
        flops, bw = setup.effective_flops_per_s, setup.effective_hbm_bw_bytes_per_s
    return setup.weight_bytes / bw * flops / setup.model.flops_per_token

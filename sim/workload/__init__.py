"""Workloads: the canonical trace frame, readers for real trace formats, transforms, generators.

The names below are imported on first use (PEP 562): the config schema imports `sim.workload.synthetic`
and `sim.workload.transforms`, which must not pull in the readers (and pandas) with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.lazy import lazy_attributes

if TYPE_CHECKING:
    from sim.workload.readers import FORMATS, load_trace
    from sim.workload.schema import OPTIONAL, REQUIRED, validate_frame

_LAZY = {
    "FORMATS": "sim.workload.readers",
    "load_trace": "sim.workload.readers",
    "OPTIONAL": "sim.workload.schema",
    "REQUIRED": "sim.workload.schema",
    "validate_frame": "sim.workload.schema",
}


__getattr__ = lazy_attributes("sim.workload", _LAZY)

__all__ = ["FORMATS", "OPTIONAL", "REQUIRED", "load_trace", "validate_frame"]

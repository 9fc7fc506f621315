"""Workloads: the canonical trace frame, readers for real trace formats, transforms, generators."""

from sim.workload.readers import FORMATS, load_trace
from sim.workload.schema import OPTIONAL, REQUIRED, validate_frame

__all__ = ["FORMATS", "OPTIONAL", "REQUIRED", "load_trace", "validate_frame"]

"""Physics and catalogs: GPUs, models, the roofline (FLOPs and bytes -> seconds), API price sheets."""

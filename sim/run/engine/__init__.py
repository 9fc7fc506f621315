"""One replica: step-time models, KV cache, batching policies, decode groups, the replica itself."""

"""The run: clock, engine, fleet, pools, build -> run -> freeze, capacity probes."""

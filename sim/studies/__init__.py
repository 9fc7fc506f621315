"""Many runs: sweeps, plans, calibration."""

"""Records -> summary: metrics, cost, the run folder, the report, HTML, OpenMetrics, plots (nothing from sim.run)."""

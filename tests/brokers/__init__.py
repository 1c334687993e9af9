"""Real brokers on loopback, as processes with start/stop/kill/restart, for tests and benchmarks."""

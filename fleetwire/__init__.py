"""fleetwire: self-hosted vehicle telemetry streaming."""

__version__ = "0.1.0"

"""Simulators: vehicles that stream as cars do."""

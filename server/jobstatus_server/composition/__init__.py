"""Composition: configuration, wiring every layer together, start and stop."""

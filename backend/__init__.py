"""Coordinator service: task API, content store API, round orchestration, aggregation, scoring and settlement."""

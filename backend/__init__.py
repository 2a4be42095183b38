"""Coordinator service: task and store APIs, round orchestration, aggregation, scoring, settlement."""

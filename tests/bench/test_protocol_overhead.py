"""`make bench` in miniature: two trainers and two validators, one measured round, on its own
Anvil. The full run (5/20/50 trainers, 3 validators) is `make bench`; this keeps the bench working
and its accounting honest."""

from __future__ import annotations

import json

import pytest

from bench import protocol_overhead
from scripts.gas_report import TARGETS


def test_a_small_bench_run_accounts_for_every_second_and_every_transaction(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--sizes", "2", "--validators", "2", "--rounds", "1", "--validation", "100", "--out", str(out)]
    assert protocol_overhead.main(argv) == 0
    [result] = json.loads(out.read_text())["results"]
    assert (result["trainers"], result["validators"], result["rounds_measured"]) == (2, 2, 1)
    # The categories partition the round: together they are its wall time ("other" is the rest).
    assert sum(result["seconds"].values()) == pytest.approx(result["round_seconds"], rel=0.05)
    seconds = result["seconds"]
    assert seconds["chain_tx"] > 0 and seconds["training"] > 0 and seconds["scoring"] > 0
    assert result["scoring_per_validator_seconds"]["max"] > 0
    # Every transaction went through the clients' observers: commit + reveal per trainer,
    # commitScores + revealScores per validator, startRound + finalizeRound + publishModel.
    assert result["rpc_requests_per_round"]["eth_sendRawTransaction"] == 2 * 2 + 2 * 2 + 3
    assert set(result["coordinator_gas_per_round"]) == {
        "startRound",
        "finalizeRound",
        "publishModel",
        "total",
    }
    gas = result["gas_per_trainer_per_round"]
    assert 0 < gas["commit_max"] <= TARGETS["commit"] and 0 < gas["reveal_max"] <= TARGETS["reveal"]
    validator_gas = result["gas_per_validator_per_round"]
    assert 0 < validator_gas["commitScores_max"] <= TARGETS["scoreCommit"]
    assert validator_gas["revealScores"] > 0

"""`make bench` in miniature: two trainers, one measured round, on its own Anvil. The full run
(5/20/50 trainers) is `make bench`; this keeps the bench working and its accounting honest."""

from __future__ import annotations

import json

import pytest

from bench import protocol_overhead
from scripts.gas_report import TARGETS


def test_a_small_bench_run_accounts_for_every_second_and_every_transaction(tmp_path):
    out = tmp_path / "bench.json"
    assert protocol_overhead.main(["--sizes", "2", "--rounds", "1", "--out", str(out)]) == 0
    [result] = json.loads(out.read_text())["results"]
    assert (result["trainers"], result["rounds_measured"]) == (2, 1)
    # The categories partition the round: together they are its wall time ("other" is the rest).
    assert sum(result["seconds"].values()) == pytest.approx(result["round_seconds"], rel=0.05)
    assert result["seconds"]["chain_tx"] > 0 and result["seconds"]["training"] > 0
    # Every transaction went through the client's observer: commit + reveal per trainer, start + finalize.
    assert result["rpc_requests_per_round"]["eth_sendRawTransaction"] == 2 * 2 + 2
    gas = result["gas_per_trainer_per_round"]
    assert 0 < gas["commit_max"] <= TARGETS["commit"] and 0 < gas["reveal_max"] <= TARGETS["reveal"]

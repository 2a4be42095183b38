"""Server optimizers on a real chain: the coordinator publishes FedAdam steps, a
restart between finalize and publish publishes the same step (no state in memory), and
`fedmarket verify` recomputes every round from chain and store alone."""

from __future__ import annotations

from fedmarket.aggregation import aggregate
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import apply_delta, decode_update, encode_model
from fedmarket.ledger import read_round
from fedmarket.report import RoundReport
from fedmarket.rounds import fetch_model
from fedmarket.verify import verify_task
from testkit.coordinator import digits_spec, play_round


def plain_fedavg_hash(coordinator, task, round_no: int) -> bytes:
    """What the round would have published without a server optimizer."""
    store, ledger = coordinator.services.store, read_round(coordinator.market, task.task_id, round_no)
    global_state = fetch_model(store, task.spec, ledger.model_hash)
    updates = [
        decode_update(store.get(cid_from_digest(ledger.reveals[t])), model=global_state)
        for t in ledger.aggregated()
    ]
    result = aggregate([u.delta for u in updates], [u.num_samples for u in updates], task.spec.aggregation)
    return digest_of(encode_model(apply_delta(global_state, result.delta)))


def test_fedadam_steps_survive_a_restart_and_verify_from_public_data(
    start_coordinator, post_task, make_trainer, make_validator, w3, tmp_path
):
    # FedAdam, whose state is a blob; FedAvgM's (the published models) goes through the same
    # next_global_model, tested round by round in tests/sdk/test_aggregation.py.
    aggregation = {"server_optimizer": "fedadam", "server_learning_rate": 0.01}
    first = start_coordinator()
    task = post_task(first, spec=digits_spec(aggregation=aggregation), rounds=3)
    trainers = [make_trainer(first, i) for i in (0, 1)]
    validators = [make_validator(first, i) for i in (0, 1)]
    for actor in (*trainers, *validators):
        actor.join(task.task_id)
    assert play_round(first, task, trainers, validators, w3).action == "finalized"
    assert play_round(first, task, trainers, validators, w3, publish=False).action == "finalized"
    first.close()  # stopped between finalize and publish: round 2's step must come from public data

    restarted = start_coordinator(data_dir=tmp_path / "coordinator")
    assert restarted.step(task.task_id).action == "published"
    trainers = [make_trainer(restarted, i) for i in (0, 1)]  # the same accounts, through the new API
    validators = [make_validator(restarted, i) for i in (0, 1)]
    assert play_round(restarted, task, trainers, validators, w3).action == "finalized"

    market, store = restarted.market, restarted.services.store
    checks = verify_task(market, store, task.task_id)
    assert [(c.status, c.findings) for c in checks] == [("finalized", ())] * 3
    # Momentum and moments moved the model off plain FedAvg from round 2 on.
    assert all(
        market.round(task.task_id, r).new_model_hash != plain_fedavg_hash(restarted, task, r) for r in (2, 3)
    )
    for round_no in (1, 2, 3):
        report = RoundReport.from_json(
            store.get(cid_from_digest(market.round(task.task_id, round_no).report_hash))
        )
        if aggregation["server_optimizer"] == "fedadam":
            assert report.server_state_cid is not None and store.has(report.server_state_cid)
        else:
            assert report.server_state_cid is None  # FedAvgM's state is the published models

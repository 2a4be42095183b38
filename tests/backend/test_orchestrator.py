"""The orchestrator on a real chain with real validators: rounds started, scored by validators,
settled by the contract's consensus, published, and aborted when a quorum is missed.

Scripted trainers and validators act through the SDK; validators score with the real rule
(:mod:`fedmarket.scoring`) on their own digits splits. The test takes each orchestrator step
itself, so every round is deterministic. The chain's clock is moved only where a deadline must
pass; every other phase closes early because everyone expected acted.
"""

from __future__ import annotations

import time

import pytest

from fedmarket.aggregation import aggregate
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import apply_delta, decode_update, encode_model
from fedmarket.consensus import HARMFUL, INVALID, SCALE, UNAVAILABLE, Consensus, compute_consensus
from fedmarket.errors import ContractRevert
from fedmarket.ledger import RoundLedger, address_order, read_round
from fedmarket.protocol import BPS, Outcome, RoundPhase, TaskStatus
from fedmarket.report import RoundReport
from fedmarket.rounds import fetch_model
from testkit.coordinator import (
    MIN_STAKE,
    SLASH_BPS,
    VALIDATOR_SHARE_BPS,
    VALIDATOR_STAKE,
    digits_spec,
    inflate,
    pass_phase,
    play_round,
    send_scores,
    send_updates,
    task_terms,
)

SLASHED = MIN_STAKE * SLASH_BPS // BPS
VALIDATOR_SLASHED = VALIDATOR_STAKE * SLASH_BPS // BPS


# ---------------------------------------------------------------------- helpers


def report_of(coordinator, task_id: int, round_no: int) -> RoundReport:
    """The round report the chain points at (the store verifies it against the on-chain hash)."""
    report_hash = coordinator.market.round(task_id, round_no).report_hash
    report = RoundReport.from_json(coordinator.services.store.get(cid_from_digest(report_hash)))
    assert report.report_hash() == report_hash  # canonical: re-encoding gives the stored bytes
    return report


def events(coordinator, name: str, task_id: int, round_no: int | None = None) -> list:
    found = coordinator.market.iter_events(name, task_id=task_id)
    return [e for e in found if round_no is None or e.args.get("round") == round_no]


def ledger_of(coordinator, task_id: int, round_no: int) -> RoundLedger:
    return read_round(coordinator.market, task_id, round_no)


def recomputed_consensus(coordinator, task, round_no: int) -> Consensus:
    """The round's consensus recomputed from its public inputs: the revealed vectors, the stakes
    and the budget as they were just before the settling block."""
    market, ledger = coordinator.market, ledger_of(coordinator, task.task_id, round_no)
    before = ledger.finalized_block - 1
    return compute_consensus(
        trainers=ledger.trainers,
        validators=ledger.validators,
        stakes=[market.validator(task.task_id, v, block=before).stake for v in ledger.validators],
        scores=[ledger.score_reveals[v] for v in ledger.validators],
        budget=market.round_budget(task.task_id, block=before),
        validator_share_bps=task.terms.validator_share_bps,
    )


def assert_settled_as_recomputed(coordinator, task, round_no: int) -> Consensus:
    """The contract's TrainerSettled / ValidatorSettled events are exactly the SDK's mirror."""
    consensus = recomputed_consensus(coordinator, task, round_no)
    ledger = ledger_of(coordinator, task.task_id, round_no)
    assert set(ledger.settled_trainers) == {t.trainer for t in consensus.trainers}
    for result in consensus.trainers:
        settled = ledger.settled_trainers[result.trainer]
        assert (settled.outcome, settled.consensus, settled.payout) == (
            result.outcome, result.consensus, result.payout,
        ), result.trainer  # fmt: skip
    assert set(ledger.settled_validators) == {v.validator for v in consensus.validators}
    for result_v in consensus.validators:
        settled_v = ledger.settled_validators[result_v.validator]
        assert (settled_v.agreement, settled_v.payout) == (result_v.agreement, result_v.payout)
    round_info = coordinator.market.round(task.task_id, round_no)
    assert round_info.payout == consensus.trainer_payout + consensus.validator_payout
    return consensus


def recomputed_model_hash(coordinator, task, round_no: int) -> bytes:
    """The aggregate of the round's Accepted updates, rebuilt from the public blobs."""
    store, ledger = coordinator.services.store, ledger_of(coordinator, task.task_id, round_no)
    global_state = fetch_model(store, task.spec, ledger.model_hash)
    updates = [
        decode_update(store.get(cid_from_digest(ledger.reveals[t])), model=global_state)
        for t in ledger.aggregated()
    ]
    if not updates:
        return digest_of(encode_model(global_state))
    result = aggregate([u.delta for u in updates], [u.num_samples for u in updates], task.spec.aggregation)
    return digest_of(encode_model(apply_delta(global_state, result.delta)))


def assert_published_the_aggregate(coordinator, task, round_no: int) -> None:
    round_info = coordinator.market.round(task.task_id, round_no)
    assert round_info.model_published
    assert round_info.new_model_hash == recomputed_model_hash(coordinator, task, round_no)
    assert coordinator.services.store.has(cid_from_digest(round_info.new_model_hash))
    report = report_of(coordinator, task.task_id, round_no)
    assert report.new_model_cid == cid_from_digest(round_info.new_model_hash)


def normalized(vector) -> list[int]:
    """n[v][i] of the consensus rule: positive scores as shares of 1e18 (flags count 0)."""
    positive = [max(e, 0) if e not in (UNAVAILABLE, INVALID, HARMFUL) else 0 for e in vector]
    total = sum(positive)
    return [p * SCALE // total if total else 0 for p in positive]


def assert_slashed_and_out(coordinator, task_id: int, trainer) -> None:
    info = coordinator.market.trainer(task_id, trainer.address)
    assert (info.stake, info.joined) == (MIN_STAKE - SLASHED, False)


def join(task, *actors) -> None:
    for actor in actors:
        actor.join(task.task_id)


def in_chain_order(addresses) -> list[str]:
    return sorted(addresses, key=address_order)


# ---------------------------------------------------------------------- honest rounds


def test_honest_trainers_are_paid_by_consensus_over_three_rounds_with_every_phase_closing_early(
    coordinator_app, post_task, make_trainer, make_validator, digits, w3
):
    task = post_task(coordinator_app, rounds=3)
    market = coordinator_app.market
    big = make_trainer(coordinator_app, 0, data=digits.share(0, 600))
    small = make_trainer(coordinator_app, 1, data=digits.share(600, 800))
    # Few samples (a trainer with shuffled labels would carry no signal at all: flagged no_signal
    # and slashed like noise, see tests/sdk/test_scoring.py).
    noisy = make_trainer(coordinator_app, 2, data=digits.share(800, 860))
    trainers = [big, small, noisy]
    validators = [make_validator(coordinator_app, i) for i in range(3)]
    join(task, *trainers, *validators)

    for round_no in (1, 2, 3):
        clock_moved: list = []
        played = play_round(coordinator_app, task, trainers, validators, w3, clock_moved=clock_moved)
        assert played.action == "finalized"
        # Everyone acted, so every phase closed early: the round settled within its commit window.
        [started] = events(coordinator_app, "RoundStarted", task.task_id, round_no)
        round_info = market.round(task.task_id, round_no)
        assert clock_moved == [] and round_info.closed_at < started.args["commitDeadline"]

        consensus = assert_settled_as_recomputed(coordinator_app, task, round_no)
        results = consensus.by_trainer()
        assert results[big.address].outcome == results[small.address].outcome == Outcome.ACCEPTED
        # More data, more value: the trainer with 60 samples earns least, if anything.
        assert results[big.address].payout > results[small.address].payout > results[noisy.address].payout
        # Pay follows consensus: a higher consensus value never earns less.
        ranked = sorted(consensus.trainers, key=lambda t: t.consensus)
        assert [t.payout for t in ranked] == sorted(t.payout for t in ranked)
        # Validators share their 10% by agreement; honest ones agree and are all paid.
        budget = int(report_of(coordinator_app, task.task_id, round_no).budget)
        assert 0 < consensus.validator_payout <= budget * VALIDATOR_SHARE_BPS // BPS
        assert all(v.payout > 0 for v in consensus.validators)
        assert_published_the_aggregate(coordinator_app, task, round_no)
        if round_no > 1:  # each round trains the model the previous one published
            assert round_info.model_hash == market.round(task.task_id, round_no - 1).new_model_hash

    info = market.task(task.task_id)
    assert info.status == TaskStatus.COMPLETED
    assert coordinator_app.api.task(task.task_id)["status"] == "completed"
    total_paid = sum(market.round(task.task_id, r).payout for r in (1, 2, 3))
    [completed] = events(coordinator_app, "TaskCompleted", task.task_id)
    assert total_paid + completed.args["refund"] == task.terms.reward_pool
    assert info.unclaimed == total_paid and info.pool == 0

    # Earnings: the API adds up the settlement events; claims pay exactly that, once.
    earned = {}
    for actor in (*trainers, *validators):
        body = coordinator_app.api.earnings(task.task_id, actor.address)
        earned[actor.address] = int(body["earned"])
        assert body["claimable"] == body["earned"] and body["claimed"] == "0"
    assert sum(earned.values()) == total_paid
    assert earned[big.address] > earned[small.address] > earned[noisy.address]
    assert market.trainer(task.task_id, noisy.address).stake == MIN_STAKE  # not slashed
    for actor in (*trainers, *validators):
        balance = market.token_balance(actor.address)
        if earned[actor.address]:
            actor.chain.claim(task.task_id)
        else:  # the noisy trainer's values may all be within noise: then it has nothing to claim
            with pytest.raises(ContractRevert, match="TaskMarketNothingToClaim"):
                actor.chain.claim(task.task_id)
        assert market.token_balance(actor.address) == balance + earned[actor.address]
    coordinator_app.sync()
    for actor in (*trainers, *validators):
        body = coordinator_app.api.earnings(task.task_id, actor.address)
        assert (body["claimed"], body["claimable"]) == (str(earned[actor.address]), "0")
    # Money in the market: exactly the stakes are left.
    stakes = sum(market.trainer(task.task_id, t.address).stake for t in trainers) + sum(
        market.validator(task.task_id, v.address).stake for v in validators
    )
    assert market.token_balance(market.market_address) == stakes
    assert market.task(task.task_id).unclaimed == 0


# ---------------------------------------------------------------------- refused updates


def test_a_garbage_update_is_flagged_invalid_rejected_and_its_trainer_slashed_and_out(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app, rounds=2)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    garbage = make_trainer(coordinator_app, 2, mode="garbage")
    validators = [make_validator(coordinator_app, i) for i in range(3)]
    join(task, *honest, garbage, *validators)

    assert play_round(coordinator_app, task, [*honest, garbage], validators, w3).action == "finalized"
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    position = ledger.trainers.index(garbage.address)
    assert all(vector[position] == INVALID for vector in ledger.score_reveals.values())
    settled = ledger.settled_trainers[garbage.address]
    assert (settled.outcome, settled.consensus, settled.payout) == (Outcome.REJECTED, 0, 0)
    assert ledger.trainer_slashes == {garbage.address: SLASHED}
    assert_slashed_and_out(coordinator_app, task.task_id, garbage)
    assert_settled_as_recomputed(coordinator_app, task, 1)
    assert ledger.aggregated() == in_chain_order(t.address for t in honest)
    assert_published_the_aggregate(coordinator_app, task, 1)  # of the two honest updates only
    assert garbage.address not in coordinator_app.api.task(task.task_id)["trainers"]

    # Round 2 goes on without it: it can no longer commit.
    assert coordinator_app.step(task.task_id).action == "started"
    garbage.prepare(task.task_id, task.spec)
    with pytest.raises(ContractRevert) as refused:
        garbage.commit(task.task_id)
    assert refused.value.name == "TaskMarketNotJoined"
    send_updates(task, honest)
    send_scores(task, validators)
    assert coordinator_app.step(task.task_id).action == "finalized"
    assert coordinator_app.step(task.task_id).action == "published"
    assert set(ledger_of(coordinator_app, task.task_id, 2).trainers) == {t.address for t in honest}


def _scaled(factor: float):
    return lambda delta: {name: tensor * factor for name, tensor in delta.items()}


@pytest.mark.parametrize(
    ("make_bad", "flag", "reason", "outcome"),
    [
        (lambda make, c, honest: make(c, 2, copy_of=honest[0]), INVALID, "duplicate", Outcome.REJECTED),
        (lambda make, c, honest: make(c, 2, metadata={"round": 2}), INVALID, "wrong_metadata", Outcome.REJECTED),
        (lambda make, c, honest: make(c, 2, rewrite=_scaled(1000.0)), INVALID, "norm_bound", Outcome.REJECTED),
        # Eight times an honest step: caught by the norm screen before its (harmful) value is computed.
        (lambda make, c, honest: make(c, 2, rewrite=_scaled(-8.0)), INVALID, "norm_outlier", Outcome.REJECTED),
        (lambda make, c, honest: make(c, 2, mode="no_upload"), UNAVAILABLE, "not_uploaded", Outcome.UNAVAILABLE),
    ],
    ids=["duplicate", "another-round", "over-norm", "sign-flipped", "not-uploaded"],
)  # fmt: skip
def test_a_bad_update_is_flagged_by_every_validator_and_settled_by_the_contract(
    coordinator_app, post_task, make_trainer, make_validator, w3, make_bad, flag, reason, outcome
):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    bad = make_bad(make_trainer, coordinator_app, honest)
    validators = [make_validator(coordinator_app, i) for i in range(3)]
    join(task, *honest, bad, *validators)

    assert play_round(coordinator_app, task, [*honest, bad], validators, w3).action == "finalized"
    for validator in validators:
        verdict = validator.scored[bad.address]
        assert (verdict.entry, verdict.reason) == (flag, reason), verdict
        assert verdict.detail
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    assert ledger.settled_trainers[bad.address].outcome == outcome
    assert ledger.settled_trainers[bad.address].payout == 0
    if outcome == Outcome.REJECTED:
        assert_slashed_and_out(coordinator_app, task.task_id, bad)
    else:  # nobody could fetch it: neither paid nor slashed, and it stays in the task
        info = coordinator_app.market.trainer(task.task_id, bad.address)
        assert (info.stake, info.joined) == (MIN_STAKE, True)
    assert all(ledger.settled_trainers[t.address].outcome == Outcome.ACCEPTED for t in honest)
    assert_published_the_aggregate(coordinator_app, task, 1)
    api = {s["trainer"]: s for s in coordinator_app.api.round(task.task_id, 1)["submissions"]}
    assert api[bad.address]["outcome"] == outcome.name.lower()


def test_a_zero_update_is_rejected_as_the_global_model_replayed(
    coordinator_app, post_task, make_trainer, make_validator, digits, w3
):
    task = post_task(coordinator_app)
    halves = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    honest = [make_trainer(coordinator_app, i, data=digits.classes(halves[i])) for i in (0, 1)]
    free_rider = make_trainer(coordinator_app, 2, mode="zero", data=digits.share(0, 200))
    validators = [make_validator(coordinator_app, i) for i in range(3)]
    join(task, *honest, free_rider, *validators)

    assert play_round(coordinator_app, task, [*honest, free_rider], validators, w3).action == "finalized"
    for validator in validators:
        assert validator.scored[free_rider.address].reason.value == "copy"
    settled = ledger_of(coordinator_app, task.task_id, 1).settled_trainers
    rider = settled[free_rider.address]
    assert (rider.outcome, rider.payout) == (Outcome.REJECTED, 0)
    assert_slashed_and_out(coordinator_app, task.task_id, free_rider)
    assert all(settled[t.address].outcome == Outcome.ACCEPTED and settled[t.address].payout for t in honest)
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    assert free_rider.address not in ledger.aggregated()  # the model is not diluted by it
    assert_published_the_aggregate(coordinator_app, task, 1)
    assert coordinator_app.api.earnings(task.task_id, free_rider.address)["earned"] == "0"


# ---------------------------------------------------------------------- silence and quorums


def test_a_non_revealer_and_a_silent_validator_are_slashed_and_the_round_still_settles(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    silent = make_trainer(coordinator_app, 2, mode="no_reveal")
    validators = [make_validator(coordinator_app, i) for i in (0, 1)]
    lazy = make_validator(coordinator_app, 2, mode="lazy")
    join(task, *honest, silent, *validators, lazy)

    clock_moved: list = []
    played = play_round(
        coordinator_app, task, [*honest, silent], [*validators, lazy], w3, clock_moved=clock_moved
    )
    assert played.action == "finalized"
    assert clock_moved == [RoundPhase.REVEAL, RoundPhase.SCORE_REVEAL]  # the silent ones held them open
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    assert ledger.trainer_slashes == {silent.address: SLASHED}
    assert ledger.validator_slashes == {lazy.address: VALIDATOR_SLASHED}
    assert silent.address not in ledger.trainers and lazy.address not in ledger.validators
    assert_slashed_and_out(coordinator_app, task.task_id, silent)
    lazy_info = coordinator_app.market.validator(task.task_id, lazy.address)
    assert (lazy_info.stake, lazy_info.joined) == (VALIDATOR_STAKE - VALIDATOR_SLASHED, False)
    [finalized] = events(coordinator_app, "RoundFinalized", task.task_id)
    assert finalized.args["burned"] == SLASHED + VALIDATOR_SLASHED
    assert_settled_as_recomputed(coordinator_app, task, 1)
    assert_published_the_aggregate(coordinator_app, task, 1)

    report = report_of(coordinator_app, task.task_id, 1)
    no_reveal = report.submission(silent.address)
    assert no_reveal is not None and (no_reveal.outcome, no_reveal.slashed) == ("no_reveal", SLASHED)
    assert {v.validator: (v.revealed, v.slashed) for v in report.validators}[lazy.address] == (
        False, VALIDATOR_SLASHED,
    )  # fmt: skip
    api_round = coordinator_app.api.round(task.task_id, 1)
    by_trainer = {s["trainer"]: s for s in api_round["submissions"]}
    assert (by_trainer[silent.address]["outcome"], by_trainer[silent.address]["slashed"]) == (
        "no_reveal", str(SLASHED),
    )  # fmt: skip
    by_validator = {v["validator"]: v for v in api_round["validators"]}
    assert (by_validator[lazy.address]["scores"], by_validator[lazy.address]["slashed"]) == (
        None, str(VALIDATOR_SLASHED),
    )  # fmt: skip
    assert api_round["burned"] == str(SLASHED + VALIDATOR_SLASHED)
    task_body = coordinator_app.api.task(task.task_id)
    assert lazy.address not in [v["validator"] for v in task_body["validators"]]
    assert silent.address not in task_body["trainers"]


def test_a_round_missing_the_validator_quorum_is_aborted_and_the_model_stays(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app, rounds=2)
    market = coordinator_app.market
    trainers = [make_trainer(coordinator_app, i) for i in (0, 1)]
    honest, lazy = make_validator(coordinator_app, 0), make_validator(coordinator_app, 1, mode="lazy")
    join(task, *trainers, honest, lazy)

    assert play_round(coordinator_app, task, trainers, [honest, lazy], w3).action == "aborted"
    [aborted] = events(coordinator_app, "RoundAborted", task.task_id)
    assert (aborted.args["round"], aborted.args["slashedCount"], aborted.args["burned"]) == (
        1, 1, VALIDATOR_SLASHED,
    )  # fmt: skip
    assert events(coordinator_app, "RoundFinalized", task.task_id) == []
    assert events(coordinator_app, "TrainerSettled", task.task_id) == []  # nobody paid
    info = market.task(task.task_id)
    assert (info.pool, info.unclaimed) == (task.terms.reward_pool, 0)  # the budget stays in the pool
    model = market.round(task.task_id, 1).model_hash
    assert info.model_hash == model and not market.round(task.task_id, 1).model_published
    assert all(market.trainer(task.task_id, t.address).stake == MIN_STAKE for t in trainers)
    api_round = coordinator_app.api.round(task.task_id, 1)
    assert api_round["status"] == "aborted" and api_round["new_model_cid"] is None
    assert {s["outcome"] for s in api_round["submissions"]} == {None}  # revealed, never settled
    # One validator is left of a quorum of two: the orchestrator waits rather than start round 2.
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting_validators", "1/2 joined")

    newcomer = make_validator(coordinator_app, 2)
    newcomer.join(task.task_id)
    assert play_round(coordinator_app, task, trainers, [honest, newcomer], w3).action == "finalized"
    assert market.round(task.task_id, 2).model_hash == model  # trained on the same model again
    # The last round's budget is everything left, the aborted round's included.
    assert int(report_of(coordinator_app, task.task_id, 2).budget) == task.terms.reward_pool
    assert_settled_as_recomputed(coordinator_app, task, 2)
    assert market.task(task.task_id).status == TaskStatus.COMPLETED


def test_a_round_missing_the_trainer_quorum_is_aborted_and_the_silent_committer_slashed(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app, rounds=2)
    revealer, silent = make_trainer(coordinator_app, 0), make_trainer(coordinator_app, 1, mode="no_reveal")
    validators = [make_validator(coordinator_app, i) for i in (0, 1)]
    join(task, revealer, silent, *validators)

    assert coordinator_app.step(task.task_id).action == "started"
    send_updates(task, [revealer, silent])
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting", "reveal")
    assert pass_phase(coordinator_app.market, w3, task.task_id, RoundPhase.REVEAL)
    send_scores(task, validators)  # the validators still score the one revealed update
    assert coordinator_app.step(task.task_id).action == "aborted"
    coordinator_app.sync()
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    assert ledger.aborted and ledger.trainer_slashes == {silent.address: SLASHED}
    assert_slashed_and_out(coordinator_app, task.task_id, silent)
    assert coordinator_app.market.task(task.task_id).pool == task.terms.reward_pool
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting_trainers", "1/2 joined")


# ---------------------------------------------------------------------- a dishonest validator


def test_an_inflating_validator_cannot_move_consensus_and_earns_less_than_each_honest_one(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app)
    trainers = [make_trainer(coordinator_app, i) for i in range(3)]  # label-skewed: all of value
    friend = trainers[2]
    honest = [make_validator(coordinator_app, i) for i in range(3)]
    inflater = make_validator(coordinator_app, 3, rewrite=inflate(friend.address))
    join(task, *trainers, *honest, inflater)

    assert play_round(coordinator_app, task, trainers, [*honest, inflater], w3).action == "finalized"
    consensus = assert_settled_as_recomputed(coordinator_app, task, 1)
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    i = ledger.trainers.index(friend.address)
    inflated = normalized(ledger.score_reveals[inflater.address])[i]
    honest_values = [normalized(ledger.score_reveals[v.address])[i] for v in honest]
    friend_value = consensus.by_trainer()[friend.address].consensus
    assert inflated > max(honest_values)  # it did try
    assert min(honest_values) <= friend_value <= max(honest_values)
    paid = {v.validator: v for v in consensus.validators}
    for validator in honest:
        assert paid[inflater.address].agreement < paid[validator.address].agreement
        assert paid[inflater.address].payout < paid[validator.address].payout


# ---------------------------------------------------------------------- the report, the index, claims


def test_the_round_report_and_the_api_say_what_the_chain_settled(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    garbage = make_trainer(coordinator_app, 2, mode="garbage")
    validators = [make_validator(coordinator_app, i) for i in range(3)]
    join(task, *honest, garbage, *validators)
    assert play_round(coordinator_app, task, [*honest, garbage], validators, w3).action == "finalized"

    market, round_info = coordinator_app.market, coordinator_app.market.round(task.task_id, 1)
    ledger = ledger_of(coordinator_app, task.task_id, 1)
    report = report_of(coordinator_app, task.task_id, 1)  # fetched by the on-chain reportHash
    assert (report.task_id, report.round, report.payout) == (task.task_id, 1, round_info.payout)
    assert report.model_cid == cid_from_digest(round_info.model_hash)
    assert [s.trainer for s in report.submissions] == ledger.trainers
    for item in report.submissions:
        settled = ledger.settled_trainers[item.trainer]
        assert (item.outcome, item.consensus, item.payout) == (
            settled.outcome.name.lower(), settled.consensus, settled.payout,
        )  # fmt: skip
        assert item.update_hash == ledger.reveals[item.trainer].hex()
    for trainer in honest:  # the aggregation weight is what the update claims
        submission = report.submission(trainer.address)
        assert submission is not None and submission.num_samples == len(trainer.data)
    assert {v.validator: v.payout for v in report.validators} == {
        v: s.payout for v, s in ledger.settled_validators.items()
    }

    # The indexer's view, through the API: every settled value, as strings; the flags by name.
    api_round = coordinator_app.api.round(task.task_id, 1)
    assert api_round["status"] == "finalized"
    assert api_round["report_cid"] == cid_from_digest(round_info.report_hash)
    assert api_round["new_model_cid"] == cid_from_digest(round_info.new_model_hash)
    assert api_round["payout"] == str(round_info.payout)
    assert int(api_round["trainer_payout"]) + int(api_round["validator_payout"]) == round_info.payout
    assert api_round["closed_at"] == round_info.closed_at
    for key in ("commit_deadline", "reveal_deadline", "score_commit_deadline", "score_reveal_deadline"):
        assert api_round[key] == getattr(round_info, key), key
    assert [s["trainer"] for s in api_round["submissions"]] == ledger.trainers
    for submission in api_round["submissions"]:
        item = report.submission(submission["trainer"])
        assert item is not None
        assert (submission["outcome"], submission["consensus"], submission["payout"]) == (
            item.outcome, str(item.consensus), str(item.payout),
        )  # fmt: skip
        assert submission["slashed"] == (str(SLASHED) if submission["trainer"] == garbage.address else None)
        assert submission["num_samples"] == (item.num_samples if item.outcome == "accepted" else None)
    assert [v["validator"] for v in api_round["validators"]] == ledger.validators
    for entry in api_round["validators"]:
        settled_v = ledger.settled_validators[entry["validator"]]
        assert (entry["agreement"], entry["payout"], entry["slashed"]) == (
            str(settled_v.agreement), str(settled_v.payout), None,
        )  # fmt: skip
        vector = ledger.score_reveals[entry["validator"]]
        assert entry["scores"] == {
            t: ("invalid" if e == INVALID else str(e)) for t, e in zip(ledger.trainers, vector, strict=True)
        }
        assert entry["scores"][garbage.address] == "invalid"
    task_body = coordinator_app.api.task(task.task_id)
    assert task_body["rounds"][0]["report_cid"] == api_round["report_cid"]
    assert [v["validator"] for v in task_body["validators"]] == [v.address for v in validators]
    assert all(v["stake"] == str(VALIDATOR_STAKE) for v in task_body["validators"])
    assert task_body["validators"][0]["data_hash"] == "0x" + validators[0].data_hash.hex()

    # Earnings: what the settlement paid each account, claimable until claimed.
    for actor in (*honest, *validators):
        body = coordinator_app.api.earnings(task.task_id, actor.address.lower())
        assert body["account"] == actor.address
        paid = ledger.settled_validators.get(actor.address) or ledger.settled_trainers[actor.address]
        assert body["earned"] == body["claimable"] == str(paid.payout) != "0"
        actor.chain.claim(task.task_id)
        with pytest.raises(ContractRevert) as again:
            actor.chain.claim(task.task_id)
        assert again.value.name == "TaskMarketNothingToClaim"
    assert coordinator_app.api.earnings(task.task_id, garbage.address)["earned"] == "0"
    coordinator_app.sync()
    body = coordinator_app.api.earnings(task.task_id, validators[0].address)
    assert body["earned_as_validator"] == body["claimed"] == body["earned"] != "0"
    assert (body["earned_as_trainer"], body["claimable"]) == ("0", "0")
    assert market.task(task.task_id).unclaimed == 0


# ---------------------------------------------------------------------- waiting and crash safety


def test_the_orchestrator_waits_for_trainers_validators_and_commits(
    coordinator_app, post_task, make_trainer, make_validator
):
    task = post_task(coordinator_app)
    first = make_trainer(coordinator_app, 0)
    first.join(task.task_id)
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting_trainers", "1/2 joined")
    make_trainer(coordinator_app, 1).join(task.task_id)
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting_validators", "0/2 joined")
    for i in (0, 1):
        make_validator(coordinator_app, i).join(task.task_id)
    assert coordinator_app.step(task.task_id).action == "started"
    assert coordinator_app.market.phase(task.task_id) == RoundPhase.COMMIT
    first.prepare(task.task_id, task.spec)
    first.commit(task.task_id)
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting", "commit")
    # Round 1 trains the model built from the spec's seed, which the store now holds.
    model_hash = coordinator_app.market.round(task.task_id, 1).model_hash
    assert coordinator_app.services.store.has(cid_from_digest(model_hash))


def test_a_task_of_another_coordinator_is_left_alone(coordinator_app, owner, outsider):
    spec = digits_spec()
    created = coordinator_app.market.with_account(owner).create_task(task_terms(spec, outsider.address))
    assert coordinator_app.step(created.task_id).action == "not_ours"
    assert coordinator_app.market.phase(created.task_id) == RoundPhase.NONE


def test_a_coordinator_restarted_between_finalize_and_publish_publishes_and_goes_on(
    start_coordinator, post_task, make_trainer, make_validator, w3, tmp_path
):
    first = start_coordinator()
    task = post_task(first, rounds=2)
    trainers = [make_trainer(first, i) for i in (0, 1)]
    validators = [make_validator(first, i) for i in (0, 1)]
    join(task, *trainers, *validators)
    assert play_round(first, task, trainers, validators, w3, publish=False).action == "finalized"
    assert not first.market.round(task.task_id, 1).model_published
    # The next round cannot start before the finalized round's model is published.
    with pytest.raises(ContractRevert) as refused:
        first.services.chain.start_round(task.task_id, first.market.task(task.task_id).model_hash)
    assert refused.value.name == "TaskMarketModelNotPublished"
    first.close()  # stopped between finalize and publish

    restarted = start_coordinator(data_dir=tmp_path / "coordinator")
    assert restarted.step(task.task_id).action == "published"
    assert_published_the_aggregate(restarted, task, 1)
    assert restarted.step(task.task_id).action == "started"
    published = restarted.market.round(task.task_id, 1).new_model_hash
    assert restarted.market.round(task.task_id, 2).model_hash == published
    restarted.sync()
    assert restarted.api.round(task.task_id, 1)["new_model_cid"] == cid_from_digest(published)
    assert restarted.api.task(task.task_id)["model_cid"] == cid_from_digest(published)
    assert len(events(restarted, "ModelPublished", task.task_id)) == 1


def test_a_completed_task_whose_last_model_was_not_published_gets_it_published_by_the_supervisor(
    start_coordinator, post_task, make_trainer, make_validator, w3, tmp_path
):
    first = start_coordinator()
    task = post_task(first)  # one round: finalizing it completes the task
    trainers = [make_trainer(first, i) for i in (0, 1)]
    validators = [make_validator(first, i) for i in (0, 1)]
    join(task, *trainers, *validators)
    assert play_round(first, task, trainers, validators, w3, publish=False).action == "finalized"
    assert first.market.task(task.task_id).status == TaskStatus.COMPLETED
    first.close()

    # With its background workers, as in production: the task is no longer open, yet it has work.
    restarted = start_coordinator(data_dir=tmp_path / "coordinator", run_orchestrators=True)
    deadline = time.monotonic() + 60
    while not restarted.market.round(task.task_id, 1).model_published:
        assert time.monotonic() < deadline, "the last round's model was never published"
        time.sleep(0.1)
    assert_published_the_aggregate(restarted, task, 1)

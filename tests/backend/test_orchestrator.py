"""The orchestrator on a real chain: rounds started, verified, scored, paid, slashed and aborted.

Scripted trainers act through the SDK; the test takes each orchestrator step itself, so every
round is deterministic. The chain's clock is moved only where a deadline must pass.
"""

from __future__ import annotations

import time

import pytest

from backend.db import SettlementRow
from fedmarket.cid import cid_from_digest
from fedmarket.codec import decode_update, update_norm
from fedmarket.errors import ContractRevert
from fedmarket.models import build_model
from fedmarket.protocol import BPS, RoundPhase, TaskStatus
from fedmarket.report import RoundReport, SubmissionReport
from testkit.coordinator import (
    MIN_STAKE,
    SLASH_BPS,
    advance_chain,
    digits_spec,
    play_round,
    send_updates,
    task_terms,
)

SLASHED = MIN_STAKE * SLASH_BPS // BPS


def report_of(coordinator, task_id: int, round_no: int) -> RoundReport:
    """The round report the chain points at (the store verifies it against the on-chain hash)."""
    report_hash = coordinator.market.round(task_id, round_no).report_hash
    report = RoundReport.from_json(coordinator.services.store.get(cid_from_digest(report_hash)))
    assert report.report_hash() == report_hash  # canonical: re-encoding gives the stored bytes
    return report


def events(coordinator, name: str, task_id: int) -> list:
    return list(coordinator.market.iter_events(name, task_id=task_id))


def verdicts(report: RoundReport) -> dict[str, SubmissionReport]:
    return {item.trainer: item for item in report.submissions}


def api_verdicts(coordinator, task_id: int, round_no: int) -> dict[str, dict]:
    return {s["trainer"]: s for s in coordinator.api.round(task_id, round_no)["submissions"]}


def assert_slashed_and_out(coordinator, task_id: int, trainer) -> None:
    info = coordinator.market.trainer(task_id, trainer.address)
    assert (info.stake, info.joined) == (MIN_STAKE - SLASHED, False)


# ---------------------------------------------------------------------- (a) honest rounds


def test_honest_trainers_are_paid_over_three_rounds_by_their_contribution(
    coordinator_app, post_task, make_trainer, digits, w3
):
    task = post_task(coordinator_app, rounds=3)
    big = make_trainer(coordinator_app, 0, data=digits.share(0, 600))
    small = make_trainer(coordinator_app, 1, data=digits.share(600, 800))
    noisy = make_trainer(coordinator_app, 2, data=digits.share(800, 860, shuffle_labels=True))
    trainers = [big, small, noisy]
    for trainer in trainers:
        trainer.join(task.task_id)

    timings = []
    for round_no in (1, 2, 3):
        trainer_before, steps = [dict(t.timings) for t in trainers], {}
        started = time.perf_counter()
        assert play_round(coordinator_app, task, trainers, w3, step_seconds=steps).action == "finalized"
        wall = time.perf_counter() - started
        report = report_of(coordinator_app, task.task_id, round_no)
        timings.append(_round_timings(wall, steps, report, trainers, trainer_before))

        chain_round = coordinator_app.market.round(task.task_id, round_no)
        [finalized] = [
            e for e in events(coordinator_app, "RoundFinalized", task.task_id) if e.args["round"] == round_no
        ]
        payouts = {item.trainer: int(item.payout) for item in report.submissions}
        assert sum(payouts.values()) == int(report.payout) == chain_round.payout == finalized.args["payout"]
        assert 0 < chain_round.payout <= int(report.budget)
        assert all(item.accepted for item in report.submissions)
        assert report.metrics.accuracy > report.metrics.previous_accuracy
        # Pay follows the leave-one-out score: a higher score never earns less.
        by_score = sorted(report.submissions, key=lambda item: item.score)
        assert [int(item.payout) for item in by_score] == sorted(int(item.payout) for item in by_score)
        assert verdicts(report)[big.address].score > verdicts(report)[noisy.address].score

    info = coordinator_app.market.task(task.task_id)
    assert info.status == TaskStatus.COMPLETED
    assert coordinator_app.api.task(task.task_id)["status"] == "completed"
    reports = [report_of(coordinator_app, task.task_id, r) for r in (1, 2, 3)]
    total_paid = sum(r.payout for r in reports)
    [completed] = events(coordinator_app, "TaskCompleted", task.task_id)
    assert total_paid + completed.args["refund"] == task.terms.reward_pool
    assert info.unclaimed == total_paid and info.pool == 0
    cumulative = {account: int(amount) for account, amount in reports[-1].cumulative.items()}
    assert sum(cumulative.values()) == total_paid
    for trainer in trainers:
        assert cumulative[trainer.address] == sum(int(verdicts(r)[trainer.address].payout) for r in reports)
    assert cumulative[big.address] > cumulative[small.address] > cumulative[noisy.address] > 0
    # Money in the market: stakes plus what the trainers have yet to claim.
    stakes = sum(coordinator_app.market.trainer(task.task_id, t.address).stake for t in trainers)
    assert (
        coordinator_app.market.token_balance(coordinator_app.market.market_address) == stakes + info.unclaimed
    )

    _print_timings(timings)


def _round_timings(wall: float, steps: dict, report: dict, trainers, before) -> dict:
    """One round's seconds by kind, trainers' summed over trainers. The coordinator's chain time
    is its startRound step plus whatever of its settling step the report does not account for
    (the phase reads and the finalizeRound transaction)."""
    spent = {
        kind: sum(t.timings[kind] - b[kind] for t, b in zip(trainers, before, strict=True))
        for kind in ("training", "chain", "storage")
    }
    decided = report.timings
    return {
        "wall": wall,
        "training": spent["training"],
        "chain": spent["chain"]
        + steps["start"]
        + steps["settle"]
        - sum(decided.values())
        + decided["chain_reads"],
        "storage": spent["storage"] + decided["storage_reads"] + decided["storage_writes"],
        "verify": decided["verify"],
        "aggregation": decided["aggregation"],
        "scoring": decided["scoring"] + decided["evaluation"],
    }


def _print_timings(timings: list[dict]) -> None:
    """A line per round and the mean of rounds 2+ (round 1's training includes PyTorch's one-off
    start-up when it runs first); `pytest -s` shows them. Measured, never asserted."""
    for round_no, row in enumerate(timings, start=1):
        print(f"round {round_no}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row.items()))
    steady = timings[1:]
    mean = {k: sum(row[k] for row in steady) / len(steady) for k in steady[0]}
    print("rounds 2+ mean: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in mean.items()))


# ---------------------------------------------------------------------- (b) garbage


def test_a_garbage_update_is_rejected_as_invalid_and_its_trainer_slashed_and_out(
    coordinator_app, post_task, make_trainer, w3
):
    task = post_task(coordinator_app, rounds=2)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    garbage = make_trainer(coordinator_app, 2, mode="garbage")
    for trainer in (*honest, garbage):
        trainer.join(task.task_id)

    assert play_round(coordinator_app, task, [*honest, garbage], w3).action == "finalized"
    verdict = verdicts(report_of(coordinator_app, task.task_id, 1))[garbage.address]
    assert (verdict.accepted, verdict.reason, verdict.payout) == (False, "invalid", 0)
    assert verdict.slashed == SLASHED
    assert_slashed_and_out(coordinator_app, task.task_id, garbage)
    [slash] = events(coordinator_app, "TrainerSlashed", task.task_id)
    assert (slash.args["trainer"], slash.args["amount"]) == (garbage.address, SLASHED)
    assert garbage.address not in coordinator_app.api.task(task.task_id)["trainers"]

    # Round 2 goes on without it: it can no longer commit.
    assert coordinator_app.step(task.task_id).action == "started"
    garbage.prepare(task.task_id, task.spec)
    with pytest.raises(ContractRevert) as refused:
        garbage.commit(task.task_id)
    assert refused.value.name == "TaskMarketNotJoined"
    send_updates(task, honest)
    assert coordinator_app.step(task.task_id).action == "finalized"
    assert {item.trainer for item in report_of(coordinator_app, task.task_id, 2).submissions} == {
        t.address for t in honest
    }


# ---------------------------------------------------------------------- (c) no reveal


def test_a_committer_that_never_reveals_is_slashed_when_the_round_is_finalized(
    coordinator_app, post_task, make_trainer, w3
):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    silent = make_trainer(coordinator_app, 2, mode="no_reveal")
    for trainer in (*honest, silent):
        trainer.join(task.task_id)

    assert play_round(coordinator_app, task, [*honest, silent], w3).action == "finalized"
    report = report_of(coordinator_app, task.task_id, 1)
    verdict = verdicts(report)[silent.address]
    assert (verdict.accepted, verdict.reason, verdict.update_hash) == (False, "no_reveal", None)
    assert_slashed_and_out(coordinator_app, task.task_id, silent)
    # The slash joins the pool before this last round's budget is computed.
    assert int(report.budget) == task.terms.reward_pool + SLASHED
    assert api_verdicts(coordinator_app, task.task_id, 1)[silent.address]["reason"] == "no_reveal"


def test_a_round_that_misses_its_quorum_is_aborted_and_the_silent_committer_slashed(
    coordinator_app, post_task, make_trainer, w3
):
    task = post_task(coordinator_app, rounds=2)
    revealer = make_trainer(coordinator_app, 0)
    silent = make_trainer(coordinator_app, 1, mode="no_reveal")
    for trainer in (revealer, silent):
        trainer.join(task.task_id)

    assert coordinator_app.step(task.task_id).action == "started"
    send_updates(task, [revealer, silent])
    assert coordinator_app.step(task.task_id).action == "waiting"  # the reveal phase is still open
    round_info = coordinator_app.market.round(task.task_id, 1)
    advance_chain(w3, round_info.reveal_deadline - coordinator_app.market.chain_time() + 1)

    assert coordinator_app.step(task.task_id).action == "aborted"
    coordinator_app.sync()
    [aborted] = events(coordinator_app, "RoundAborted", task.task_id)
    assert aborted.args["round"] == 1
    assert events(coordinator_app, "RoundFinalized", task.task_id) == []
    assert_slashed_and_out(coordinator_app, task.task_id, silent)
    assert coordinator_app.market.trainer(task.task_id, revealer.address).stake == MIN_STAKE
    info = coordinator_app.market.task(task.task_id)
    assert (info.pool, info.unclaimed) == (
        task.terms.reward_pool + SLASHED,
        0,
    )  # the budget stays in the pool
    api_round = coordinator_app.api.round(task.task_id, 1)
    assert api_round["status"] == "aborted"
    assert {s["trainer"]: (s["accepted"], s["reason"], s["slashed"]) for s in api_round["submissions"]} == {
        revealer.address: (None, None, None),
        silent.address: (False, "no_reveal", str(SLASHED)),
    }
    # One trainer is left of a quorum of two: the orchestrator waits rather than start round 2.
    assert coordinator_app.step(task.task_id).action == "waiting_trainers"

    # Someone joins; the last round's budget is everything left, the aborted round's included.
    newcomer = make_trainer(coordinator_app, 2)
    newcomer.join(task.task_id)
    assert play_round(coordinator_app, task, [revealer, newcomer], w3).action == "finalized"
    report = report_of(coordinator_app, task.task_id, 2)
    assert int(report.budget) == task.terms.reward_pool + SLASHED
    assert sum(int(amount) for amount in report.cumulative.values()) == int(report.payout)
    assert coordinator_app.market.task(task.task_id).status == TaskStatus.COMPLETED


# ---------------------------------------------------------------------- (d) zero update


def test_a_zero_update_earns_at_most_the_base_share(coordinator_app, post_task, make_trainer, w3):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    free_rider = make_trainer(coordinator_app, 2, mode="zero")
    for trainer in (*honest, free_rider):
        trainer.join(task.task_id)

    assert play_round(coordinator_app, task, [*honest, free_rider], w3).action == "finalized"
    report = report_of(coordinator_app, task.task_id, 1)
    accepted = [item for item in report.submissions if item.accepted]
    base_each = int(report.budget) * 2 // 10 // len(accepted)  # base_share 0.2
    verdict = verdicts(report)[free_rider.address]
    assert verdict.norm == 0.0 and verdict.score <= 0
    assert int(verdict.payout) <= base_each
    assert all(int(verdicts(report)[t.address].payout) > base_each for t in honest)


# ---------------------------------------------------------------------- (e) report, index, claims


def test_the_round_report_matches_the_chain_and_the_api_and_its_proofs_pay(
    coordinator_app, post_task, make_trainer, w3
):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    garbage = make_trainer(coordinator_app, 2, mode="garbage")
    silent = make_trainer(coordinator_app, 3, mode="no_reveal")
    everyone = [*honest, garbage, silent]
    for trainer in everyone:
        trainer.join(task.task_id)
    assert play_round(coordinator_app, task, everyone, w3).action == "finalized"

    market, round_info = coordinator_app.market, coordinator_app.market.round(task.task_id, 1)
    report = report_of(coordinator_app, task.task_id, 1)  # fetched by the on-chain reportHash
    info = market.task(task.task_id)
    assert (report.task_id, report.round) == (task.task_id, 1)
    assert report.rewards_root == info.rewards_root.hex()
    assert cid_from_digest(info.model_hash) == report.new_model_cid
    assert coordinator_app.services.store.has(report.new_model_cid)
    assert int(report.payout) == round_info.payout
    assert set(report.timings) >= {
        "chain_reads",
        "storage_reads",
        "verify",
        "scoring",
        "aggregation",
        "evaluation",
    }
    # Every committer has a verdict; the rejected ones are exactly those slashed on chain.
    assert set(verdicts(report)) == {t.address for t in everyone}
    slashes = {
        e.args["trainer"]: e.args["amount"] for e in events(coordinator_app, "TrainerSlashed", task.task_id)
    }
    assert slashes == {garbage.address: SLASHED, silent.address: SLASHED}
    [finalized] = events(coordinator_app, "RoundFinalized", task.task_id)
    assert finalized.args["rejectedCount"] == 2

    # The indexer projects the report: the API shows each verdict as the report has it.
    api_round = coordinator_app.api.round(task.task_id, 1)
    assert api_round["status"] == "finalized" and api_round["report_cid"] == cid_from_digest(
        round_info.report_hash
    )
    assert api_round["payout"] == str(report.payout) and api_round["metrics"] == report.metrics.model_dump(
        mode="json"
    )
    for submission in api_round["submissions"]:
        verdict = verdicts(report)[submission["trainer"]]
        assert (submission["accepted"], submission["reason"], submission["payout"]) == (
            verdict.accepted, verdict.reason, str(verdict.payout),
        )  # fmt: skip
        assert submission["score"] == pytest.approx(verdict.score) if verdict.score is not None else True
        assert submission["slashed"] == (str(SLASHED) if not verdict.accepted else None)
    assert coordinator_app.api.task(task.task_id)["rounds"][0]["report_cid"] == api_round["report_cid"]

    # The rewards endpoint's proofs are accepted by the contract, once.
    for trainer in honest:
        rewards = coordinator_app.api.rewards(task.task_id, trainer.address)
        assert rewards["rewards_root"] == "0x" + info.rewards_root.hex()
        amount = int(rewards["cumulative"])
        assert amount == int(verdicts(report)[trainer.address].payout) > 0
        balance = market.token_balance(trainer.address)
        trainer.chain.claim(task.task_id, amount, rewards["proof"])
        assert market.token_balance(trainer.address) == balance + amount
        with pytest.raises(ContractRevert) as again:
            trainer.chain.claim(task.task_id, amount, rewards["proof"])
        assert again.value.name == "TaskMarketNothingToClaim"
    for trainer in (garbage, silent):
        assert coordinator_app.api.rewards(task.task_id, trainer.address)["cumulative"] == "0"
    coordinator_app.sync()
    assert coordinator_app.api.rewards(task.task_id, honest[0].address)["claimed"] == str(
        verdicts(report)[honest[0].address].payout
    )
    assert market.task(task.task_id).unclaimed == 0


# ---------------------------------------------------------------------- (f) (g) (h) and more refusals


def _scaled(factor: float):
    return lambda delta: {name: tensor * factor for name, tensor in delta.items()}


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda make, coordinator, honest: make(coordinator, 2, copy_of=honest[0]), "duplicate"),
        (lambda make, coordinator, honest: make(coordinator, 2, metadata={"round": 2}), "wrong_metadata"),
        (
            lambda make, coordinator, honest: make(coordinator, 2, metadata={"trainer": honest[1].address}),
            "wrong_metadata",
        ),
        (lambda make, coordinator, honest: make(coordinator, 2, metadata={"task_id": 999}), "wrong_metadata"),
        (lambda make, coordinator, honest: make(coordinator, 2, rewrite=_scaled(1000.0)), "norm_bound"),
        (lambda make, coordinator, honest: make(coordinator, 2, rewrite=_scaled(-8.0)), "harmful"),
        (lambda make, coordinator, honest: make(coordinator, 2, mode="no_upload"), "not_uploaded"),
    ],
    ids=[
        "duplicate",
        "another-round",
        "another-trainer",
        "another-task",
        "over-norm",
        "sign-flipped",
        "not-uploaded",
    ],
)
def test_a_refused_update_is_rejected_with_its_reason_and_slashed(
    coordinator_app, post_task, make_trainer, w3, make_bad, reason
):
    task = post_task(coordinator_app)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    bad = make_bad(make_trainer, coordinator_app, honest)
    for trainer in (*honest, bad):
        trainer.join(task.task_id)

    assert play_round(coordinator_app, task, [*honest, bad], w3).action == "finalized"
    report = report_of(coordinator_app, task.task_id, 1)
    verdict = verdicts(report)[bad.address]
    assert (verdict.accepted, verdict.reason, verdict.payout) == (False, reason, 0), verdict
    assert verdict.detail
    assert_slashed_and_out(coordinator_app, task.task_id, bad)
    assert all(
        verdicts(report)[t.address].accepted and int(verdicts(report)[t.address].payout) > 0 for t in honest
    )
    assert api_verdicts(coordinator_app, task.task_id, 1)[bad.address]["reason"] == reason


# ---------------------------------------------------------------------- waiting and crash safety


def test_the_orchestrator_waits_for_validation_data_trainers_and_commits(
    coordinator_app, post_task, make_trainer, owner, digits
):
    task = post_task(coordinator_app, validation=False)
    assert coordinator_app.step(task.task_id).action == "waiting_validation"
    coordinator_app.api.upload_validation_data(
        task.task_id,
        digits.validation.X,
        digits.validation.y,
        owner_key=owner.key,
        market=coordinator_app.market,
    )
    first = make_trainer(coordinator_app, 0)
    first.join(task.task_id)
    waiting = coordinator_app.step(task.task_id)
    assert (waiting.action, waiting.detail) == ("waiting_trainers", "1/2 joined")
    second = make_trainer(coordinator_app, 1)
    second.join(task.task_id)
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


def test_a_settlement_is_recorded_before_it_is_sent_and_resent_unchanged_after_a_crash(
    start_coordinator, post_task, make_trainer, deployer, tmp_path
):
    first = start_coordinator()
    task = post_task(first)
    trainers = [make_trainer(first, i) for i in (0, 1)]
    for trainer in trainers:
        trainer.join(task.task_id)
    assert first.step(task.task_id).action == "started"
    send_updates(task, trainers)

    # The market is paused under the coordinator: its finalizeRound fails after it decided.
    admin = first.market.with_account(deployer)
    admin.pause()
    with pytest.raises(ContractRevert) as refused:
        first.step(task.task_id)
    assert refused.value.name == "EnforcedPause"
    with first.services.db.session() as session:
        row = session.get(SettlementRow, (task.task_id, 1))
        recorded = dict(row.payload)
        assert row.tx_hash is None
    assert first.services.store.has(recorded["report_cid"]) and first.services.store.has(
        recorded["new_model_cid"]
    )
    admin.unpause()

    # A coordinator started again on the same data sends the recorded settlement, not a new one.
    restarted = start_coordinator(data_dir=tmp_path / "coordinator")
    assert restarted.step(task.task_id).action == "finalized"
    round_info = restarted.market.round(task.task_id, 1)
    assert round_info.report_hash.hex() == recorded["report_hash"]
    assert restarted.market.task(task.task_id).rewards_root.hex() == recorded["rewards_root"]
    assert round_info.payout == int(recorded["payout"])
    with restarted.services.db.session() as session:
        assert session.get(SettlementRow, (task.task_id, 1)).tx_hash is not None
    assert restarted.step(task.task_id).action == "done"
    assert len(list(restarted.market.iter_events("RoundFinalized", task_id=task.task_id))) == 1


def test_the_report_names_each_revealed_update_as_the_trainer_sent_it(
    coordinator_app, post_task, make_trainer, w3
):
    task = post_task(coordinator_app)
    trainers = [make_trainer(coordinator_app, i) for i in (0, 1)]
    for trainer in trainers:
        trainer.join(task.task_id)
    assert play_round(coordinator_app, task, trainers, w3).action == "finalized"
    report = report_of(coordinator_app, task.task_id, 1)
    for trainer in trainers:
        verdict = verdicts(report)[trainer.address]
        sent = decode_update(trainer.update, model=build_model(task.spec))
        assert verdict.update_hash == trainer.update_hash.hex()
        assert verdict.update_cid == cid_from_digest(trainer.update_hash)
        assert verdict.num_samples == sent.num_samples == len(trainer.data)
        assert verdict.norm == pytest.approx(update_norm(sent.delta))

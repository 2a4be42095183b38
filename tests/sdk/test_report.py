"""The round report: one definition, canonical bytes anyone can re-hash, the rewards tree it implies."""

from __future__ import annotations

import hashlib
import json

import pytest

from fedmarket.errors import CodecError
from fedmarket.merkle import RewardsTree, verify
from fedmarket.report import RejectionReason, RoundMetrics, RoundReport, SubmissionReport

ALICE = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
BOB = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
BIG = 3 * 10**24  # beyond 2**53: must survive JSON as a decimal string


def make_report(**overrides) -> RoundReport:
    fields = dict(
        task_id=1,
        round=2,
        model_cid="bafkreia",
        new_model_cid="bafkreib",
        budget=BIG,
        payout=BIG - 7,
        metrics=RoundMetrics(
            loss=0.5, accuracy=0.9, previous_loss=0.7, previous_accuracy=0.8, accepted=1, rejected=1
        ),
        submissions=(
            SubmissionReport(
                trainer=BOB.lower(),
                update_hash=None,
                update_cid=None,
                accepted=False,
                reason=RejectionReason.NO_REVEAL,
                detail="committed but did not reveal",
                num_samples=0,
                norm=None,
                score=None,
                payout=0,
                slashed=5 * 10**18,
            ),  # fmt: skip
            SubmissionReport(
                trainer=ALICE,
                update_hash="ab" * 32,
                update_cid="bafkreic",
                accepted=True,
                reason=None,
                detail=None,
                num_samples=100,
                norm=1.25,
                score=0.01,
                payout=BIG - 7,
                slashed=0,
            ),  # fmt: skip
        ),
        cumulative={ALICE: BIG - 7 + 11, BOB: 11},
        rewards_root=RewardsTree({ALICE: BIG - 7 + 11, BOB: 11}).root.hex(),
        timings={"scoring": 0.25},
    )
    fields.update(overrides)
    return RoundReport(**fields)


def test_a_report_round_trips_through_its_canonical_bytes():
    report = make_report()
    blob = report.to_canonical_json()
    again = RoundReport.from_json(blob)
    assert again == report
    assert again.to_canonical_json() == blob
    assert report.report_hash() == hashlib.sha256(blob).digest()


def test_amounts_are_decimal_strings_and_addresses_checksummed():
    document = json.loads(make_report().to_canonical_json())
    assert document["budget"] == str(BIG) and document["submissions"][0]["slashed"] == str(5 * 10**18)
    assert document["submissions"][0]["trainer"] == BOB  # given in lower case, stored checksummed
    assert document["submissions"][0]["reason"] == "no_reveal"
    assert list(document) == sorted(document)


def test_the_rewards_tree_is_the_one_the_report_lists():
    report = make_report()
    tree = report.rewards_tree()
    assert tree.root.hex() == report.rewards_root
    assert verify(tree.root, ALICE, report.cumulative[ALICE], tree.proof(ALICE))


def test_a_non_finite_measurement_is_recorded_as_null():
    metrics = RoundMetrics(
        loss=float("inf"),
        accuracy=0.1,
        previous_loss=float("nan"),
        previous_accuracy=0.1,
        accepted=0,
        rejected=2,
    )
    report = make_report(metrics=metrics)
    assert report.metrics.loss is None and report.metrics.previous_loss is None
    assert b"NaN" not in report.to_canonical_json() and b"Infinity" not in report.to_canonical_json()


def test_submission_finds_a_trainer_by_any_spelling_of_its_address():
    report = make_report()
    assert report.submission(ALICE.lower()).payout == BIG - 7
    assert report.submission("0x" + "00" * 20) is None


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(budget="-1"), "budget"),
        (lambda d: d.update(payout=1.5), "payout"),
        (lambda d: d.update(extra="field"), "extra"),
        (lambda d: d["submissions"][1].update(reason="bored"), "reason"),
        (lambda d: d.update(rewards_root="0x" + "00" * 32), "rewards_root"),
        (lambda d: d["cumulative"].update({"not-an-address": "1"}), "address"),
        (lambda d: d["cumulative"].update({BOB: "12"}), "rewards_root"),
        (lambda d: d["submissions"][0].update(payout="1"), "payout"),
    ],
)
def test_a_malformed_report_is_refused_with_the_field_named(mutate, needle):
    document = json.loads(make_report().to_canonical_json())
    mutate(document)
    with pytest.raises(CodecError, match=needle):
        RoundReport.from_json(json.dumps(document))


def test_a_report_is_not_json_at_all():
    with pytest.raises(CodecError, match="not a valid round report"):
        RoundReport.from_json(b"\x00\x01")

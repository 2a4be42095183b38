"""The round report: one definition, canonical bytes anyone can re-hash, payouts that add up."""

from __future__ import annotations

import hashlib
import json

import pytest

from fedmarket.errors import CodecError
from fedmarket.report import RoundReport, SubmissionOutcome, SubmissionReport, ValidatorReport

ALICE = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
BOB = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
VERA = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
BIG = 3 * 10**24  # beyond 2**53: must survive JSON as a decimal string


def make_report(**overrides) -> RoundReport:
    fields = dict(
        task_id=1,
        round=2,
        model_cid="bafkreia",
        new_model_cid="bafkreib",
        aggregation="fedavg",
        budget=BIG,
        payout=BIG - 7,
        submissions=(
            SubmissionReport(
                trainer=BOB.lower(),
                update_hash=None,
                update_cid=None,
                outcome=SubmissionOutcome.NO_REVEAL,
                consensus=0,
                payout=0,
                slashed=5 * 10**18,
                num_samples=0,
            ),
            SubmissionReport(
                trainer=ALICE,
                update_hash="ab" * 32,
                update_cid="bafkreic",
                outcome=SubmissionOutcome.ACCEPTED,
                consensus=10**18,
                payout=BIG - 10,
                slashed=0,
                num_samples=100,
            ),
        ),  # fmt: skip
        validators=(ValidatorReport(validator=VERA, revealed=True, agreement=10**18, payout=3, slashed=0),),
        timings={"aggregation": 0.25},
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
    assert document["submissions"][0]["outcome"] == "no_reveal"
    assert list(document) == sorted(document)


def test_accepted_lists_what_the_aggregate_is_made_of():
    assert [s.trainer for s in make_report().accepted] == [ALICE]


def test_submission_finds_a_trainer_by_any_spelling_of_its_address():
    report = make_report()
    assert report.submission(ALICE.lower()).payout == BIG - 10
    assert report.submission("0x" + "00" * 20) is None


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(budget="-1"), "budget"),
        (lambda d: d.update(payout=1.5), "payout"),
        (lambda d: d.update(extra="field"), "extra"),
        (lambda d: d["submissions"][1].update(outcome="bored"), "outcome"),
        (lambda d: d["submissions"][0].update(trainer="not-an-address"), "address"),
        (lambda d: d["submissions"][0].update(payout="1"), "payout"),
        (lambda d: d["validators"][0].update(payout="4"), "payout"),
        (lambda d: d.update(budget="1"), "exceeds the budget"),
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

"""`make attacks` and `make fairness` in miniature, on their own devnets: the real contracts,
coordinator and scoring, fewer trainers and rounds. Each attack here meets a different screen
(sign-flip: signal, boost: norm, copy: an earlier update, alie: a same-round group, noise:
signal), and no honest trainer may be slashed. The full runs are `make attacks` and
`make fairness`; their figures are in reports/."""

from __future__ import annotations

import json

from bench import attacks, fairness


def test_each_screened_attack_earns_nothing_and_costs_the_honest_nothing(tmp_path):
    out = tmp_path / "attacks.json"
    # The full suite's set-up (10 trainers, the last 3 attacking), two rounds, one worker (the
    # other xdist worker shares the cores). With 6 trainers a boost capped by the norm bound can
    # stay under the norm screen's 3x: a known limit (README, "What is not done yet").
    argv = [
        "--attacks",
        "sign-flip",
        "boost",
        "copy",
        "alie",
        "noise",
        "--trainers",
        "10",
        "--attackers",
        "3",
    ]
    attacks.main([*argv, "--rounds", "2", "--jobs", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    rows = {row["attack"]: row for row in report["attacks"]}
    assert set(rows) == {"sign-flip", "boost", "copy", "alie", "noise"}
    for name, row in rows.items():
        assert row["attackers_earned"] == 0, (name, row)
        assert row["honest_slashed"] == 0, (name, row)
        assert row["honest_earned"] > 0, (name, row)
    assert "norm_outlier" in rows["boost"]["attacker_flags"]
    assert "copy" in rows["alie"]["attacker_flags"] and "copy" in rows["copy"]["attacker_flags"]
    assert "no_signal" in rows["noise"]["attacker_flags"]


def test_no_honest_label_skewed_trainer_is_slashed_in_a_short_sweep(tmp_path):
    out = tmp_path / "fairness.json"
    assert (
        fairness.main(
            ["--cases", "e", "--seeds", "1", "--sweep-rounds", "2", "--jobs", "1", "--out", str(out)]
        )
        == 0
    )
    [case] = json.loads(out.read_text())["cases"]
    assert (case["case"], case["holds"], case["honest_slashed"], case["runs"]) == ("e", True, 0, 3)
    assert case["honest_updates"] >= 3 * 5  # every trainer of every run scored in round 1 at least

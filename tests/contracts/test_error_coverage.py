"""Every revert path has a test: each custom error of TaskMarket must be expected, by name, in
some test under tests/contracts. A new error without a test fails here."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Errors no call can reach, each with the reason; a test shows what happens instead.
# (none today; an entry is "ErrorName": "why no call can reach it").
UNREACHABLE: dict[str, str] = {}

# OpenZeppelin errors the market relies on for its admin and safety guarantees.
REQUIRED_INHERITED = {"EnforcedPause", "OwnableUnauthorizedAccount", "ReentrancyGuardReentrantCall"}


def expected_error_names() -> set[str]:
    """Names quoted as strings in the contract tests (as in `error.name == "TaskMarketX"`); the
    fuzzer's predictions do not count, each error needs a test named after its case."""
    names = set()
    for path in HERE.glob("test_*.py"):
        if path.name in (Path(__file__).name, "test_invariants.py"):
            continue
        names |= set(re.findall(r"[\"']([A-Z][A-Za-z0-9]+)[\"']", path.read_text()))
    return names


def market_errors(artifacts) -> set[str]:
    return {entry["name"] for entry in artifacts["TaskMarket"].abi if entry["type"] == "error"}


def test_every_task_market_error_is_expected_by_a_test(artifacts):
    declared = {name for name in market_errors(artifacts) if name.startswith("TaskMarket")}
    untested = declared - expected_error_names() - set(UNREACHABLE)
    assert not untested, f"custom errors without a test that expects them by name: {sorted(untested)}"


def test_unreachable_errors_are_still_declared_and_untested(artifacts):
    """An exemption must not outlive its error, nor hide a test that now reaches it."""
    assert set(UNREACHABLE) <= market_errors(artifacts)
    reached = set(UNREACHABLE) & expected_error_names()
    assert not reached, f"errors listed as unreachable but expected by a test: {sorted(reached)}"


def test_pause_ownership_and_reentrancy_errors_are_expected_by_a_test(artifacts):
    assert REQUIRED_INHERITED <= market_errors(artifacts)
    assert REQUIRED_INHERITED <= expected_error_names()

"""Every installed command, as a real process: `--version` says the package version, `--help`
helps, and neither starts anything (the coordinator's would otherwise serve until killed).
Also where the demo writes its report, which decides whether a run overwrites the README's."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from scripts.demo import REPORTS, parse_args
from testkit.market import REPO_ROOT

BIN = Path(sys.executable).parent  # the console scripts pyproject.toml installs
COMMANDS = [
    "fedmarket-coordinator",
    "fedmarket-trainer",
    "fedmarket-validator",
    "fedmarket",
    "fedmarket-owner",
]


def run(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {"PATH": str(BIN), "HOME": str(REPO_ROOT), "COLUMNS": "120"}
    return subprocess.run(
        argv, cwd=REPO_ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def test_every_installed_command_says_its_version_as_a_real_process():
    # Started together: each one imports torch, which takes seconds on its own.
    commands = [[str(BIN / command), "--version"] for command in COMMANDS] + [
        [sys.executable, "scripts/demo.py", "--version"],
        [sys.executable, "-m", "fedmarket.devnet", "--version"],
    ]
    clean = {"PATH": str(BIN), "HOME": str(REPO_ROOT), "COLUMNS": "120"}
    procs = [
        subprocess.Popen(
            argv, cwd=REPO_ROOT, env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv in commands
    ]
    for command, proc in zip([*COMMANDS, "demo", "devnet"], procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (command, err)
        if command in COMMANDS:
            assert out == f"{command} {version('fedmarket')}\n"
        else:
            assert out.strip().endswith(version("fedmarket")), (command, out)


def test_coordinator_help_prints_help_and_starts_nothing(tmp_path):
    # Pointed at a data dir of its own: a coordinator that started would create its database there.
    result = run(
        str(BIN / "fedmarket-coordinator"), "--help", env={"FEDMARKET_DATA_DIR": str(tmp_path / "data")}
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: fedmarket-coordinator" in result.stdout and "serve" in result.stdout
    assert "FEDMARKET_COORDINATOR_KEY" in result.stdout and "FEDMARKET_PORT" in result.stdout
    assert not (tmp_path / "data").exists()


def test_coordinator_with_invalid_settings_says_which_in_one_line(tmp_path):
    result = run(
        str(BIN / "fedmarket-coordinator"),
        env={"FEDMARKET_PROFILE": "production", "FEDMARKET_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: the coordinator's settings are not valid: FEDMARKET_COORDINATOR_KEY is required outside the "
        "devnet profile"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("argv", "report"),
    [
        ([], "demo.json"),
        (["--attacker", "noise"], "demo-noise.json"),
        (["--bad-validator", "inflate"], "demo-inflate.json"),
        (["--attacker", "sign-flip", "--bad-validator", "lazy"], "demo-sign-flip-lazy.json"),
    ],
)
def test_an_attack_run_writes_a_report_of_its_own(argv, report):
    assert parse_args(argv).out == REPORTS / report


def test_an_explicit_out_wins(tmp_path):
    args = parse_args(["--attacker", "noise", "--out", str(tmp_path / "mine.json")])
    assert args.out == tmp_path / "mine.json"
    assert args.command == f"python scripts/demo.py --attacker noise --out {tmp_path / 'mine.json'}"


def test_coordinator_without_a_deployment_says_to_deploy(tmp_path):
    result = run(
        str(BIN / "fedmarket-coordinator"),
        env={
            "FEDMARKET_DEPLOYMENT_FILE": str(tmp_path / "none.json"),
            "FEDMARKET_DATA_DIR": str(tmp_path / "d"),
        },
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"error: no deployments file at {tmp_path / 'none.json'}: deploy first (`make deploy` or `ape run deploy`)"
    )
    assert not (tmp_path / "d").exists()  # nothing was started

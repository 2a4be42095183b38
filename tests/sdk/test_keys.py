"""Private keys people type, and the keys `make devnet` prints for them to type.

`parse_private_key` is the one parser: a key is exactly 32 bytes of hex, because eth-account
left-pads a short key into another account. The devnet test starts `python -m fedmarket.devnet`
(what `make devnet` runs) as a real process and checks the keys it prints against the accounts
the real Anvil behind it funds.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from eth_account import Account
from web3 import Web3

from fedmarket.devnet import dev_account, free_port
from fedmarket.keys import InvalidKeyError, account_from_key, parse_private_key
from testkit import interruptible
from testkit.market import REPO_ROOT

KEY = dev_account(4).key  # 32 bytes


@pytest.mark.parametrize(
    "text", [KEY.hex(), "0x" + KEY.hex(), "0X" + KEY.hex().upper(), f"  0x{KEY.hex()}\n"]
)
def test_a_key_is_32_bytes_of_hex_with_or_without_0x(text):
    assert parse_private_key(text) == KEY
    assert account_from_key(text).address == dev_account(4).address


def test_a_key_missing_a_digit_is_an_error_not_another_account():
    short = "0x" + KEY.hex()[:-1]
    assert Account.from_key(short).address != dev_account(4).address  # what eth-account alone does
    with pytest.raises(InvalidKeyError, match="the trainer key has 63 hex digits, not 64") as caught:
        parse_private_key(short, what="the trainer key")
    assert KEY.hex()[:-1] not in str(caught.value)  # the message never echoes the key


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "is empty"),
        ("0x", "is empty"),
        ("0x" + KEY.hex() + "00", "has 66 hex digits, not 64"),
        ("0x" + "g" * 64, "is not hex"),
        (KEY.hex()[:32] + " " + KEY.hex()[32:], "is not hex"),
        ("0x" + "00" * 32, "not a valid secp256k1 private key"),
        ("0x" + "ff" * 32, "not a valid secp256k1 private key"),
    ],
)
def test_what_is_not_a_key_says_why(text, phrase):
    with pytest.raises(InvalidKeyError, match=re.escape(phrase)):
        parse_private_key(text)


def test_an_invalid_key_is_a_value_error_for_generic_callers():
    with pytest.raises(ValueError):
        parse_private_key("0x1234")


def test_the_devnet_prints_the_accounts_and_keys_anvil_funds(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "fedmarket.devnet", "--port", str(port), "--accounts", "3"]
    command += ["--block-time", "0", "--log", str(tmp_path / "anvil.log")]
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=interruptible,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while not any(line.startswith("Listening on") for line in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "devnet exited or hung:\n" + "".join(lines)
            lines.append(line)
        text = "".join(lines)
        accounts_part, keys_part = text.split("Private Keys")
        addresses = re.findall(r"^\((\d)\) (0x[0-9a-fA-F]{40}) \(10000 ETH\)$", accounts_part, flags=re.M)
        keys = re.findall(r"^\((\d)\) (0x[0-9a-f]{64})$", keys_part, flags=re.M)
        funded = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}")).eth.accounts
        assert [a for _, a in addresses] == list(funded) and len(funded) == 3
        assert [account_from_key(k).address for _, k in keys] == list(funded)
        assert "Mnemonic:          test test test test test test test test test test test junk" in text
        assert f"Listening on http://127.0.0.1:{port} (chain id 31337)" in text
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=120)  # generous: a loaded CI machine is slow, not wrong
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest and "devnet stopped" in rest

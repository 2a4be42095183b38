"""Local Anvil devnet: start it, stop it, and the funded accounts it comes with.

Tests, `make demo` and `make gas` start their own Anvil through :class:`Anvil`; nothing is ever
started by hand. The binary comes from the npm package `@foundry-rs/anvil` (`npm ci`); we start
the binary itself rather than `npx anvil`, because killing npx would orphan the node.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedmarket.errors import ChainError

REPO_ROOT = Path(__file__).resolve().parents[1]
ANVIL_NPM_BINARY = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
CHAIN_ID = 31337
# Anvil's (and Hardhat's) public development mnemonic: these keys guard nothing but devnet ETH.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_DERIVATION_PATH = "m/44'/60'/0'/0/"
DEFAULT_ACCOUNTS = 64
DEV_BALANCE = 10_000  # ETH per dev account
DEVNET_BLOCK_TIME = 1.0  # the devnet's clock ticks without traffic: phase deadlines pass by themselves
# Historical states Anvil keeps, in memory only. Without a limit it dumps the state of every old
# block to ~/.foundry/anvil/tmp and never deletes it: one `make test` wrote 6 GB there (the test
# session's Anvil sees hundreds of deployments), enough to fill a CI disk.
HISTORY_STATES = 512

Account.enable_unaudited_hdwallet_features()


def find_anvil() -> str:
    """Path of the anvil binary: $FEDMARKET_ANVIL, the npm package, then PATH."""
    candidates = [os.environ.get("FEDMARKET_ANVIL"), str(ANVIL_NPM_BINARY), shutil.which("anvil")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ChainError(
        "anvil not found: run `make setup` (npm ci installs @foundry-rs/anvil) or set FEDMARKET_ANVIL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dev_account(index: int) -> LocalAccount:
    """The `index`-th account Anvil funds with devnet ETH (derived from the public dev mnemonic)."""
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_DERIVATION_PATH}{index}")


def dev_accounts(count: int) -> list[LocalAccount]:
    return [dev_account(i) for i in range(count)]


class Anvil:
    """An Anvil process on a free local port; a context manager that always stops it.

    Every transaction is mined at once; the last HISTORY_STATES blocks' states can be read
    (`eth_call` at a block) and nothing is written to disk. `block_time=None` mines nothing
    else, so the chain's clock stands still between transactions (what deterministic tests
    want); with `block_time`, Anvil
    also mines an empty block every `block_time` seconds (`--mixed-mining`), so deadlines pass on
    chain without anybody's traffic, as on a real chain (what the demo and `make devnet` use).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        accounts: int = DEFAULT_ACCOUNTS,
        block_time: float | None = None,
        log_path: Path | None = None,
        config_out: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._accounts = accounts
        self._block_time = block_time
        self._log_path = log_path
        self._config_out = config_out  # anvil writes its accounts and keys here (JSON) at start
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Anvil:
        command = [
            find_anvil(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(CHAIN_ID),
            "--accounts", str(self._accounts),
            "--mnemonic", DEV_MNEMONIC,
            "--balance", str(DEV_BALANCE),
            "--prune-history", str(HISTORY_STATES),
        ]  # fmt: skip
        if self._block_time:
            command += ["--block-time", str(self._block_time), "--mixed-mining"]
        if self._config_out:
            command += ["--config-out", str(self._config_out)]
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ChainError(
                    f"anvil exited at start with code {self._process.returncode} (port {self.port} busy?)"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ChainError(f"anvil did not open port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def banner(config: dict, *, balance: int = DEV_BALANCE) -> str:
    """Anvil's own start-up listing (accounts, private keys, wallet, chain id), from the JSON it
    writes with ``--config-out``: what ``anvil`` prints when started by hand."""
    addresses = [Web3.to_checksum_address(a) for a in config["available_accounts"]]
    lines = ["", "Available Accounts", "==================", ""]
    lines += [f"({i}) {address} ({balance} ETH)" for i, address in enumerate(addresses)]
    lines += ["", "Private Keys", "==================", ""]
    lines += [f"({i}) {key}" for i, key in enumerate(config["private_keys"])]
    wallet = config.get("wallet") or {}
    lines += [
        "",
        "Wallet",
        "==================",
        f"Mnemonic:          {wallet.get('mnemonic', DEV_MNEMONIC)}",
    ]
    lines += [f"Derivation path:   {wallet.get('derivation_path', DEV_DERIVATION_PATH)}", ""]
    lines += ["Chain ID", "==================", "", str(CHAIN_ID), ""]
    return "\n".join(lines)


def _read_config(path: Path, timeout: float = 10.0) -> dict:
    """Anvil's --config-out file, once it is written whole."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise ChainError(f"anvil did not write its accounts to {path} within {timeout} s") from None
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    """`python -m fedmarket.devnet [--port 8545]` (`make devnet`): a devnet in the foreground until
    Ctrl-C. It prints the accounts and keys as anvil does; anvil's request log goes to --log."""
    import argparse
    import signal
    import tempfile

    from fedmarket.display import package_version

    parser = argparse.ArgumentParser(description="Run a local Anvil devnet (chain id 31337, dev mnemonic).")
    parser.add_argument("--version", action="version", version=f"fedmarket devnet {package_version()}")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS)
    parser.add_argument(
        "--block-time",
        type=float,
        default=DEVNET_BLOCK_TIME,
        help="seconds between blocks when there is no traffic (0: a block per transaction only)",
    )
    parser.add_argument(
        "--log", type=Path, default=Path(".fedmarket/devnet/anvil.log"), help="anvil's own output (appended)"
    )
    args = parser.parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedmarket-devnet-") as scratch:
        config_out = Path(scratch) / "anvil.json"
        node = Anvil(
            port=args.port, accounts=args.accounts, block_time=args.block_time, log_path=args.log,
            config_out=config_out,
        )  # fmt: skip
        try:
            with node:
                print(banner(_read_config(config_out)))
                print(
                    f"Listening on {node.url} (chain id {CHAIN_ID}); "
                    + (f"a block every {args.block_time:g} s without traffic; " if args.block_time else "")
                    + f"anvil's log: {args.log}; Ctrl-C stops it",
                    flush=True,
                )
                signal.pause()
        except KeyboardInterrupt:
            print("devnet stopped")
        except ChainError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()

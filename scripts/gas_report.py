"""`make gas`: gas used per TaskMarket operation, read from receipts of real rounds on Anvil.

Writes reports/gas.json ({operation: gas}) and prints a table with the gas targets of docs/protocol.md
(section "Gas"); exits non-zero when one is missed. `commit`, `reveal` and `scoreCommit` are the
last of their phase, which close it early (the costliest case); `scoreReveal_50` reveals a vector
over 50 updates. `finalizeRound_50x5` settles 50 revealers scored by 5 validators, nobody rejected.
`finalizeRound_worst` is the costliest settlement at the caps (MAX_TRAINERS revealers, MAX_VALIDATORS
score revealers): the largest of `finalizeRound_caps_rejected` (every update rejected),
`finalizeRound_caps_accepted` (every update paid, full-width scores) and `finalizeRound_caps_silent`
(one revealer, every other committer slashed); `abortRound_caps` aborts a round in which every
trainer and every validator stayed silent.

`worst_case_settlements` also serves tests/contracts/test_consensus.py (on a lean Anvil of its own).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.types import RPCEndpoint, TxParams, TxReceipt

from fedmarket.contracts import compile_contracts
from fedmarket.deploy import ONE_TOKEN, Deployment, deploy_market
from fedmarket.devnet import Anvil, dev_accounts
from fedmarket.protocol import (
    RoundPhase,
    TaskTerms,
    make_commitment,
    make_score_commitment,
    sign_permit,
    sign_task_terms,
)

REPORT_PATH = Path(__file__).resolve().parents[1] / "reports" / "gas.json"
TARGETS = {
    "commit": 49_500,
    "reveal": 42_500,
    "scoreCommit": 50_000,
    "scoreReveal_50": 80_000,
    "claim": 60_000,
    "finalizeRound_50x5": 1_500_000,
    "finalizeRound_worst": 15_000_000,  # a 30M-gas block with a 2x margin
}
INVALID = -(2**255) + 1  # TaskMarket.SCORE_INVALID
MAX_TRAINERS, MAX_VALIDATORS = 256, 16  # TaskMarket's caps (read from the contract and checked)
TX_GAS = 20_000_000  # gas limit of unmeasured transactions: no estimate, one request each
FUNDS = 1_000 * ONE_TOKEN


class GasBench:
    """Sends transactions signed here with explicit nonces and gas (no estimate): hundreds of
    accounts take part in a worst-case round, so each transaction costs one request."""

    def __init__(
        self, w3: Web3, deployment: Deployment, deployer: LocalAccount, coordinator: LocalAccount
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.market = deployment.market_contract(w3)
        self.token = deployment.token_contract(w3)
        self.deployer = deployer
        self.coordinator = coordinator
        self.chain_id = w3.eth.chain_id
        self.decoder = deployment.revert_decoder()
        self._nonces: dict[str, int] = {}

    # ------------------------------------------------------------ transactions

    def send(self, account: LocalAccount, fn, *, gas: int = TX_GAS) -> HexBytes:
        address = account.address
        if address not in self._nonces:
            self._nonces[address] = self.w3.eth.get_transaction_count(address, "pending")
        tx = fn.build_transaction(
            {
                "from": address,
                "nonce": self._nonces[address],
                "gas": gas,
                "maxFeePerGas": 100 * 10**9,
                "maxPriorityFeePerGas": 10**9,
                "chainId": self.chain_id,
            }
        )
        tx_hash = self.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        self._nonces[address] += 1
        return tx_hash

    def wait(self, tx_hash: HexBytes) -> TxReceipt:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.01)
        if receipt["status"] != 1:
            tx = self.w3.eth.get_transaction(tx_hash)
            call: TxParams = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "gas": tx["gas"]}
            try:
                self.w3.eth.call(call, receipt["blockNumber"] - 1)
            except Exception as exc:  # the replay names the revert
                raise RuntimeError(f"transaction reverted: {self.decoder.from_exception(exc)}") from exc
            raise RuntimeError(f"transaction failed: {receipt}")
        return receipt

    def gas(self, account: LocalAccount, fn) -> int:
        """Sends `fn` and returns the gas it used."""
        return self.wait(self.send(account, fn))["gasUsed"]

    def all(self, calls: Sequence[tuple[LocalAccount, object]]) -> None:
        """Sends every call, then checks every receipt."""
        for tx_hash in [self.send(account, fn) for account, fn in calls]:
            self.wait(tx_hash)

    def rpc(self, method: str, params: list):
        return self.w3.provider.make_request(RPCEndpoint(method), params)["result"]

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot", [])

    def revert(self, snapshot: str) -> None:
        assert self.rpc("evm_revert", [snapshot]) is True
        self._nonces.clear()  # the chain forgot the transactions sent since

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def advance_past(self, task_id: int, deadline_index: int) -> None:
        """Moves the clock past the current round's deadline `deadline_index` (0: commit ... 3: score reveal)."""
        round_no = self.state(task_id)[2]
        deadline = self.market.functions.getRound(task_id, round_no).call()[deadline_index]
        now = self.now()
        if now <= deadline:
            self.rpc("evm_increaseTime", [deadline - now + 1])
            self.rpc("evm_mine", [])

    # ------------------------------------------------------------ accounts and tasks

    def crowd(self, label: str, count: int) -> list[LocalAccount]:
        """`count` fresh accounts with devnet ETH, FUNDS tokens and an unlimited allowance for the market."""
        accounts = [Account.from_key(Web3.keccak(text=f"gas-bench-{label}-{i}")) for i in range(count)]
        for account in accounts:
            self.rpc("anvil_setBalance", [account.address, hex(10**22)])
        self.all([(self.deployer, self.token.functions.transfer(a.address, FUNDS)) for a in accounts])
        self.all([(a, self.token.functions.approve(self.market.address, 2**256 - 1)) for a in accounts])
        return accounts

    def terms(self, *, rounds: int, trainers: int, validators: int, min_trainers: int = 1) -> TaskTerms:
        return TaskTerms(
            spec_hash=b"\x01" * 32, coordinator=self.coordinator.address, rounds=rounds,
            min_trainers=min_trainers, max_trainers=trainers, slash_bps=1_000, commit_window=600,
            reveal_window=600, reward_pool=rounds * 1_000 * ONE_TOKEN, min_stake=10 * ONE_TOKEN,
            min_validators=1, max_validators=validators, validator_share_bps=1_000, score_window=600,
            score_reveal_window=600, min_validator_stake=20 * ONE_TOKEN,
        )  # fmt: skip

    def create_task(self, owner: LocalAccount, terms: TaskTerms) -> tuple[int, int]:
        """(task id, createTask gas)."""
        gas = self.gas(owner, self.market.functions.createTask(terms.as_tuple()))
        return self.market.functions.taskCount().call(), gas

    def create_task_for(self, owner: LocalAccount, relayer: LocalAccount) -> int:
        terms = self.terms(rounds=1, trainers=1, validators=1)
        deadline = self.now() + 3600
        signature = sign_task_terms(
            owner.key, terms, nonce=self.market.functions.nonces(owner.address).call(),
            deadline=deadline, chain_id=self.chain_id, market=self.market.address,
        )  # fmt: skip
        permit = sign_permit(
            owner.key, token_name=self.token.functions.name().call(), token=self.token.address,
            chain_id=self.chain_id, spender=self.market.address, value=terms.reward_pool,
            nonce=self.token.functions.nonces(owner.address).call(), deadline=deadline,
        )  # fmt: skip
        fn = self.market.functions.createTaskFor(
            terms.as_tuple(), owner.address, deadline, signature, permit.as_tuple()
        )
        return self.gas(relayer, fn)

    def state(self, task_id: int):
        return self.market.functions.getTask(task_id).call()[1]

    def phase(self, task_id: int) -> RoundPhase:
        return RoundPhase(self.market.functions.roundPhase(task_id).call())

    # ------------------------------------------------------------ rounds; each returns the gas of its last call

    def join(self, task_id: int, trainers: Sequence[LocalAccount]) -> int:
        self.all([(t, self.market.functions.join(task_id)) for t in trainers[:-1]])
        return self.gas(trainers[-1], self.market.functions.join(task_id))

    def join_validators(self, task_id: int, validators: Sequence[LocalAccount]) -> int:
        def fn(index: int):
            return self.market.functions.joinAsValidator(
                task_id, Web3.keccak(text=f"split-{index}"), 20 * ONE_TOKEN
            )

        self.all([(v, fn(i)) for i, v in enumerate(validators[:-1])])
        return self.gas(validators[-1], fn(len(validators) - 1))

    def start_round(self, task_id: int) -> int:
        model = self.state(task_id)[7] if self.state(task_id)[2] else b"\x02" * 32
        return self.gas(self.coordinator, self.market.functions.startRound(task_id, model))

    def commit(
        self, task_id: int, trainers: Sequence[LocalAccount]
    ) -> tuple[dict[str, tuple[bytes, bytes]], int]:
        """Commits for every trainer: (what each one will reveal, the last commit's gas)."""
        round_no = self.state(task_id)[2]
        secrets: dict[str, tuple[bytes, bytes]] = {
            t.address: (
                Web3.keccak(text=f"update-{t.address}-{round_no}"),
                Web3.keccak(text=f"salt-{t.address}"),
            )
            for t in trainers
        }
        fns = [
            (
                t,
                self.market.functions.commit(
                    task_id, make_commitment(task_id, round_no, t.address, *secrets[t.address])
                ),
            )
            for t in trainers
        ]
        self.all(fns[:-1])
        return secrets, self.gas(*fns[-1])

    def reveal(
        self, task_id: int, trainers: Sequence[LocalAccount], secrets: dict[str, tuple[bytes, bytes]]
    ) -> int:
        fns = [(t, self.market.functions.reveal(task_id, *secrets[t.address])) for t in trainers]
        self.all(fns[:-1])
        return self.gas(*fns[-1])

    def score(
        self,
        task_id: int,
        validators: Sequence[LocalAccount],
        vector: Callable[[int], list[int]],
        *,
        reveal: bool = True,
    ) -> tuple[int, int, dict[str, list[int]]]:
        """Every validator commits `vector(v)` and (with `reveal`) reveals it: (last commit gas,
        last reveal gas, vectors by validator)."""
        round_no = self.state(task_id)[2]
        vectors: dict[str, list[int]] = {v.address: vector(i) for i, v in enumerate(validators)}
        salt = b"\x05" * 32
        commits = [
            (
                v,
                self.market.functions.commitScores(
                    task_id, make_score_commitment(task_id, round_no, v.address, vectors[v.address], salt)
                ),
            )
            for v in validators
        ]
        self.all(commits[:-1])
        commit_gas = self.gas(*commits[-1])
        if not reveal:
            return commit_gas, 0, vectors
        reveals = [
            (v, self.market.functions.revealScores(task_id, vectors[v.address], salt)) for v in validators
        ]
        self.all(reveals[:-1])
        return commit_gas, self.gas(*reveals[-1]), vectors

    def settlement(
        self,
        trainers: Sequence[LocalAccount],
        non_revealers: Sequence[LocalAccount],
        vectors: dict[str, list[int]],
        silent: Sequence[str] = (),
    ) -> tuple:
        """The Settlement of a round whose `trainers` are listed in the order the vectors score them."""
        validators = sorted(vectors, key=lambda a: int(a, 16))
        return (
            [t.address for t in trainers],
            [t.address for t in non_revealers],
            validators,
            [vectors[v] for v in validators],
            list(silent),
        )

    def finalize(self, task_id: int, settlement: tuple) -> int:
        return self.gas(self.coordinator, self.market.functions.finalizeRound(task_id, settlement))


def by_address(accounts: Sequence[LocalAccount]) -> list[LocalAccount]:
    return sorted(accounts, key=lambda a: int(a.address, 16))


def honest_vector(trainers: int) -> Callable[[int], list[int]]:
    """Validator v's scores: close to each other, all positive (every update accepted)."""
    return lambda v: [10**15 * (1_000 + (i * 7 + v * 13) % 50) for i in range(trainers)]


def worst_case_settlements(bench: GasBench, owner: LocalAccount) -> dict[str, int]:
    """Settlements at the caps: MAX_TRAINERS committers, MAX_VALIDATORS validators. Returns gas by
    scenario (see the module docstring). Leaves the chain as it found it."""
    market = bench.market.functions
    assert (market.MAX_TRAINERS().call(), market.MAX_VALIDATORS().call()) == (MAX_TRAINERS, MAX_VALIDATORS)
    start = bench.snapshot()
    trainers = by_address(bench.crowd("caps-trainer", MAX_TRAINERS))
    validators = by_address(bench.crowd("caps-validator", MAX_VALIDATORS))
    bench.all([(owner, bench.token.functions.approve(bench.market.address, 2**256 - 1))])
    task_id, _ = bench.create_task(
        owner, bench.terms(rounds=2, trainers=MAX_TRAINERS, validators=MAX_VALIDATORS)
    )
    bench.join(task_id, trainers)
    bench.join_validators(task_id, validators)
    bench.start_round(task_id)
    secrets, _ = bench.commit(task_id, trainers)
    committed = bench.snapshot()
    bench.reveal(task_id, trainers, secrets)
    revealed = bench.snapshot()
    gas: dict[str, int] = {}

    # every update flagged invalid by every validator: all rejected, slashed and burned
    _, _, vectors = bench.score(task_id, validators, lambda v: [INVALID] * MAX_TRAINERS)
    gas["finalizeRound_caps_rejected"] = bench.finalize(task_id, bench.settlement(trainers, [], vectors))
    bench.revert(revealed)

    # every update paid; scores use all 128 bits (the dearest calldata), each validator its own
    def wide(v: int) -> list[int]:
        return [
            2**127 + int.from_bytes(Web3.keccak(text=f"{v}-{i}")[:15], "big") for i in range(MAX_TRAINERS)
        ]

    _, _, vectors = bench.score(task_id, validators, wide)
    gas["finalizeRound_caps_accepted"] = bench.finalize(task_id, bench.settlement(trainers, [], vectors))
    bench.revert(committed)

    # one revealer: every other committer is slashed in the settlement
    bench.reveal(task_id, trainers[:1], secrets)
    bench.advance_past(task_id, 1)
    _, _, vectors = bench.score(task_id, validators, lambda v: [10**18])
    settlement = bench.settlement(trainers[:1], trainers[1:], vectors)
    gas["finalizeRound_caps_silent"] = bench.finalize(task_id, settlement)
    bench.revert(start)

    gas["finalizeRound_worst"] = max(gas.values())
    return gas


def abort_at_caps(bench: GasBench, owner: LocalAccount) -> int:
    """abortRound of a round at the caps in which every trainer committed and no one revealed,
    and every validator committed scores and did not reveal them."""
    start = bench.snapshot()
    trainers = by_address(bench.crowd("caps-trainer", MAX_TRAINERS))
    validators = by_address(bench.crowd("caps-validator", MAX_VALIDATORS))
    bench.all([(owner, bench.token.functions.approve(bench.market.address, 2**256 - 1))])
    task_id, _ = bench.create_task(
        owner, bench.terms(rounds=2, trainers=MAX_TRAINERS, validators=MAX_VALIDATORS)
    )
    bench.join(task_id, trainers)
    bench.join_validators(task_id, validators)
    bench.start_round(task_id)
    bench.commit(task_id, trainers)
    bench.advance_past(task_id, 1)
    bench.score(task_id, validators, lambda v: [], reveal=False)
    bench.advance_past(task_id, 3)
    fn = bench.market.functions.abortRound(
        task_id, [t.address for t in trainers], [v.address for v in validators]
    )
    gas = bench.gas(owner, fn)
    bench.revert(start)
    return gas


def measure() -> dict[str, int]:
    artifacts = compile_contracts()
    deployer, owner, coordinator, relayer = dev_accounts(4)
    with Anvil() as anvil:  # keeps no block history on disk (fedmarket.devnet.HISTORY_STATES)
        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        bench = GasBench(w3, deployment, deployer, coordinator)
        bench.all([(deployer, bench.token.functions.transfer(owner.address, 10**6 * ONE_TOKEN))])
        bench.all([(owner, bench.token.functions.approve(bench.market.address, 2**256 - 1))])
        gas: dict[str, int] = {}

        trainers = by_address(bench.crowd("trainer", 50))
        validators = by_address(bench.crowd("validator", 5))

        # 5 trainers, 3 validators: the per-call figures (the last of each phase, which closes it)
        five, three = trainers[:5], validators[:3]
        task_id, gas["createTask"] = bench.create_task(
            owner, bench.terms(rounds=10, trainers=5, validators=3)
        )
        gas["createTaskFor"] = bench.create_task_for(owner, relayer)
        bench.all(
            [(owner, bench.token.functions.approve(bench.market.address, 2**256 - 1))]
        )  # the permit's replaced it
        gas["join"] = bench.join(task_id, five)
        gas["joinAsValidator"] = bench.join_validators(task_id, three)
        gas["startRound"] = bench.start_round(task_id)
        secrets, gas["commit"] = bench.commit(task_id, five)
        gas["reveal"] = bench.reveal(task_id, five, secrets)
        gas["scoreCommit"], _, vectors = bench.score(task_id, three, honest_vector(5))
        gas["finalizeRound_5x3"] = bench.finalize(task_id, bench.settlement(five, [], vectors))
        gas["publishModel"] = bench.gas(
            coordinator, bench.market.functions.publishModel(task_id, b"\x03" * 32, b"\x04" * 32)
        )
        gas["claim"] = bench.gas(five[0], bench.market.functions.claim(task_id))

        # 50 trainers, 5 validators: a 50-entry score reveal and its settlement
        task_id, _ = bench.create_task(owner, bench.terms(rounds=1, trainers=50, validators=5))
        bench.join(task_id, trainers)
        bench.join_validators(task_id, validators)
        bench.start_round(task_id)
        bench.reveal(task_id, trainers, bench.commit(task_id, trainers)[0])
        _, gas["scoreReveal_50"], vectors = bench.score(task_id, validators, honest_vector(50))
        gas["finalizeRound_50x5"] = bench.finalize(task_id, bench.settlement(trainers, [], vectors))

        gas.update(worst_case_settlements(bench, owner))
        gas["abortRound_caps"] = abort_at_caps(bench, owner)
    return gas


def check(gas: dict[str, int]) -> list[str]:
    return [f"{op} = {gas[op]:,} > {limit:,}" for op, limit in TARGETS.items() if gas[op] > limit]


def main() -> int:
    started = time.monotonic()
    gas = measure()
    REPORT_PATH.parent.mkdir(exist_ok=True)
    REPORT_PATH.write_text(json.dumps(gas, indent=2) + "\n")
    print(f"{'operation':<30}{'gas':>12}  target")
    for op, used in gas.items():
        target = f"<= {TARGETS[op]:,}" if op in TARGETS else ""
        print(f"{op:<30}{used:>12,}  {target}")
    failures = check(gas)
    print(f"\nwritten to {REPORT_PATH} in {time.monotonic() - started:.1f} s")
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

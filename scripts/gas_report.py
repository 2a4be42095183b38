"""`make gas`: gas used per TaskMarket operation, read from receipts of a real round trip on Anvil.

Writes reports/gas.json ({operation: gas}) and prints a table with the gas targets of docs/protocol.md (section "Gas").
`finalizeRound_N` settles a round in which N trainers revealed and none was rejected: the three
figures must stay within 10% of each other (settlement cost independent of honest trainers).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedmarket.contracts import compile_contracts
from fedmarket.deploy import ONE_TOKEN, Deployment, deploy_market, fund_accounts
from fedmarket.devnet import Anvil, dev_accounts
from fedmarket.merkle import RewardsTree
from fedmarket.protocol import TaskTerms, make_commitment, sign_permit, sign_task_terms
from fedmarket.transactions import TransactionSender

REPORT_PATH = Path(__file__).resolve().parents[1] / "reports" / "gas.json"
TARGETS = {"commit": 60_000, "reveal": 45_000, "claim_after_1_round": 80_000, "claim_after_10_rounds": 80_000}
PAYOUT_PER_TRAINER = ONE_TOKEN


class GasBench:
    def __init__(
        self, w3: Web3, deployment: Deployment, owner: LocalAccount, coordinator: LocalAccount
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.market = deployment.market_contract(w3)
        self.token = deployment.token_contract(w3)
        self.owner = owner
        self.coordinator = coordinator
        self._senders: dict[str, TransactionSender] = {}
        self._approved: set[str] = set()

    def send(self, account: LocalAccount, fn) -> int:
        if account.address not in self._senders:
            self._senders[account.address] = TransactionSender(
                self.w3, account, decoder=self.deployment.revert_decoder()
            )
        return self._senders[account.address].transact(fn)["gasUsed"]

    def approve(self, account: LocalAccount) -> None:
        if account.address not in self._approved:
            self.send(account, self.token.functions.approve(self.deployment.market, 2**255))
            self._approved.add(account.address)

    def terms(self, *, rounds: int, trainers: int) -> TaskTerms:
        return TaskTerms(
            spec_hash=b"\x01" * 32, coordinator=self.coordinator.address, rounds=rounds, min_trainers=1,
            max_trainers=trainers, slash_bps=1000, commit_window=600, reveal_window=600,
            reward_pool=rounds * trainers * PAYOUT_PER_TRAINER * 2, min_stake=10 * ONE_TOKEN,
        )  # fmt: skip

    def create_task(self, *, rounds: int, trainers: list[LocalAccount]) -> tuple[int, int, int]:
        """(task id, createTask gas, the last join's gas)."""
        self.approve(self.owner)
        gas = self.send(
            self.owner,
            self.market.functions.createTask(self.terms(rounds=rounds, trainers=len(trainers)).as_tuple()),
        )
        task_id = self.market.functions.taskCount().call()
        join_gas = []
        for trainer in trainers:
            self.approve(trainer)
            join_gas.append(self.send(trainer, self.market.functions.join(task_id)))
        return task_id, gas, join_gas[-1]

    def create_task_for(self, relayer: LocalAccount) -> int:
        terms = self.terms(rounds=1, trainers=1)
        chain_id = self.w3.eth.chain_id
        deadline = self.w3.eth.get_block("latest")["timestamp"] + 3600
        signature = sign_task_terms(
            self.owner.key, terms, nonce=self.market.functions.nonces(self.owner.address).call(),
            deadline=deadline, chain_id=chain_id, market=self.deployment.market,
        )  # fmt: skip
        permit = sign_permit(
            self.owner.key, token_name=self.token.functions.name().call(), token=self.deployment.token,
            chain_id=chain_id, spender=self.deployment.market, value=terms.reward_pool,
            nonce=self.token.functions.nonces(self.owner.address).call(), deadline=deadline,
        )  # fmt: skip
        fn = self.market.functions.createTaskFor(
            terms.as_tuple(), self.owner.address, deadline, signature, permit.as_tuple()
        )
        self._approved.discard(self.owner.address)  # the permit replaced the owner's allowance
        return self.send(relayer, fn)

    def play_round(
        self, task_id: int, trainers: list[LocalAccount], earned: dict[str, int]
    ) -> dict[str, int]:
        """One round where every trainer commits and reveals, each earns PAYOUT_PER_TRAINER."""
        gas = {
            "startRound": self.send(self.coordinator, self.market.functions.startRound(task_id, b"\x02" * 32))
        }
        round_no = self.market.functions.getTask(task_id).call()[1][2]
        salts = {}
        for trainer in trainers:
            update_hash, salt = (
                Web3.keccak(text=f"update-{trainer.address}-{round_no}"),
                Web3.keccak(text=f"salt-{round_no}"),
            )
            salts[trainer.address] = (update_hash, salt)
            commitment = make_commitment(task_id, round_no, trainer.address, update_hash, salt)
            gas["commit"] = self.send(trainer, self.market.functions.commit(task_id, commitment))
        for trainer in trainers:
            gas["reveal"] = self.send(trainer, self.market.functions.reveal(task_id, *salts[trainer.address]))
        for trainer in trainers:
            earned[trainer.address] = earned.get(trainer.address, 0) + PAYOUT_PER_TRAINER
        tree = RewardsTree(earned)
        payout = PAYOUT_PER_TRAINER * len(trainers)
        gas["finalizeRound"] = self.send(
            self.coordinator,
            self.market.functions.finalizeRound(task_id, b"\x03" * 32, tree.root, payout, b"\x04" * 32, []),
        )
        return gas

    def claim(self, task_id: int, trainer: LocalAccount, earned: dict[str, int]) -> int:
        tree = RewardsTree(earned)
        proof = tree.proof(trainer.address)
        return self.send(trainer, self.market.functions.claim(task_id, earned[trainer.address], proof))


def measure() -> dict[str, int]:
    artifacts = compile_contracts()
    accounts = dev_accounts(60)
    deployer, owner, coordinator, relayer, *trainer_pool = accounts
    with Anvil(accounts=len(accounts)) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        fund_accounts(
            w3,
            deployment,
            deployer,
            [owner.address] + [t.address for t in trainer_pool],
            tokens=10_000 * ONE_TOKEN,
        )
        bench = GasBench(w3, deployment, owner, coordinator)
        gas: dict[str, int] = {}

        five = trainer_pool[:5]
        task_id, gas["createTask"], gas["join"] = bench.create_task(rounds=10, trainers=five)
        gas["createTaskFor"] = bench.create_task_for(relayer)
        earned: dict[str, int] = {}
        for round_no in range(1, 11):
            round_gas = bench.play_round(task_id, five, earned)
            if round_no == 1:
                gas.update({k: round_gas[k] for k in ("startRound", "commit", "reveal")})
                gas["claim_after_1_round"] = bench.claim(task_id, five[0], earned)
        gas["claim_after_10_rounds"] = bench.claim(task_id, five[1], earned)

        for size in (1, 10, 50):
            trainers = trainer_pool[:size]
            sized_task, _, _ = bench.create_task(rounds=1, trainers=trainers)
            gas[f"finalizeRound_{size}"] = bench.play_round(sized_task, trainers, {})["finalizeRound"]
    return gas


def check(gas: dict[str, int]) -> list[str]:
    failures = [f"{op} = {gas[op]:,} > {limit:,}" for op, limit in TARGETS.items() if gas[op] > limit]
    finals = [gas[f"finalizeRound_{n}"] for n in (1, 10, 50)]
    if max(finals) > 1.1 * min(finals):
        failures.append(f"finalizeRound spread {min(finals):,}..{max(finals):,} exceeds 10%")
    return failures


def main() -> int:
    started = time.monotonic()
    gas = measure()
    REPORT_PATH.parent.mkdir(exist_ok=True)
    REPORT_PATH.write_text(json.dumps(gas, indent=2) + "\n")
    print(f"{'operation':<24}{'gas':>10}  target")
    for op, used in gas.items():
        target = f"<= {TARGETS[op]:,}" if op in TARGETS else ""
        print(f"{op:<24}{used:>10,}  {target}")
    failures = check(gas)
    print(f"\nwritten to {REPORT_PATH} in {time.monotonic() - started:.1f} s")
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

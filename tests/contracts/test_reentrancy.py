"""Re-entrancy: a market over a token whose `transfer` calls back into the market.

`contracts/test/MockReentrantToken.sol` re-enters the market from inside the market's own
payment (as a token with transfer hooks, or a malicious one, would). Every paying function is
`nonReentrant`: the inner call fails with `ReentrancyGuardReentrantCall`, and no token leaves
the market beyond what the outer call owed.
"""

from __future__ import annotations

import pytest
from eth_utils import function_signature_to_4byte_selector
from testkit.contracts import STAKE, MarketDriver, error_args, reverts

from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts
from fedmarket.merkle import RewardsTree

REENTRANT_CALL = function_signature_to_4byte_selector("ReentrancyGuardReentrantCall()")


class Hooked:
    """The second market, over MockReentrantToken, and the token contract acting as an account."""

    def __init__(self, chain, driver, deployer):
        self.chain = chain
        self.driver = driver
        self.deployer = deployer
        self.token = chain.token
        self.market = chain.market
        self.address = chain.token.address  # the token contract itself, when it acts as an account

    def arm(self, fn_name: str, args: list, *, bubble: bool):
        data = self.market.encode_abi(fn_name, args=args)
        self.chain.tx(self.deployer, self.token.functions.arm(self.market.address, data, bubble))

    def act(self, fn_name: str, args: list, *, to=None):
        """The token contract calls `to` (the market by default) as an ordinary account."""
        target = to or self.market
        call = target.encode_abi(fn_name, args=args)
        return self.chain.tx(self.deployer, self.token.functions.execute(target.address, call))

    def join_as_token(self, task_id: int):
        self.chain.tx(self.deployer, self.token.functions.transfer(self.address, STAKE))
        self.act("approve", [self.market.address, STAKE], to=self.token)
        self.act("join", [task_id])

    def last_reentry(self) -> tuple[bool, bytes, int]:
        fns = self.token.functions
        return fns.lastCallSucceeded().call(), fns.lastCallReturnData().call(), fns.reentries().call()

    def held(self) -> int:
        return self.chain.balance(self.market.address)


@pytest.fixture
def hooked(market_chain, artifacts, deployer, owner, coordinator, trainers) -> Hooked:
    deployment = deploy_market(
        market_chain.w3, deployer, token=artifacts["MockReentrantToken"], market=artifacts["TaskMarket"]
    )
    funded = [owner.address, *(t.address for t in trainers[:3])]
    fund_accounts(market_chain.w3, deployment, deployer, funded, tokens=10_000 * ONE_TOKEN)
    chain = type(market_chain)(market_chain.w3, deployment)  # the same Chain helper, on the second market
    return Hooked(chain, MarketDriver(chain, owner, coordinator), deployer)


def settled_task(hooked: Hooked, trainers, *, earnings: dict[str, int], rounds: int = 3):
    driver = hooked.driver
    task_id, _ = driver.create_task(rounds=rounds)
    driver.join(task_id, trainers[:2])
    driver.run_round(task_id, committers=trainers[:2])
    _, tree = driver.finalize(task_id, earnings=earnings, payout=sum(earnings.values()))
    return task_id, tree


def test_claim_reentering_claim_reverts_reentrancy_guard(hooked, trainers):
    task_id, tree = settled_task(hooked, trainers, earnings={trainers[0].address: 100, hooked.address: 50})
    hooked.arm("claim", [task_id, 50, tree.proof(hooked.address)], bubble=True)
    held = hooked.held()

    error = reverts(hooked.driver.claim, task_id, trainers[0], tree)

    assert error.name == "ReentrancyGuardReentrantCall"
    assert hooked.held() == held
    assert hooked.market.functions.claimedOf(task_id, trainers[0].address).call() == 0
    assert hooked.market.functions.claimedOf(task_id, hooked.address).call() == 0


def test_reentrant_claim_is_refused_and_nothing_extra_leaves(hooked, trainers):
    task_id, tree = settled_task(hooked, trainers, earnings={trainers[0].address: 100, hooked.address: 50})
    hooked.arm("claim", [task_id, 50, tree.proof(hooked.address)], bubble=False)
    held, token_balance = hooked.held(), hooked.chain.balance(hooked.address)

    hooked.driver.claim(task_id, trainers[0], tree)

    succeeded, returned, reentries = hooked.last_reentry()
    assert reentries == 1
    assert (succeeded, returned[:4]) == (False, REENTRANT_CALL)
    assert hooked.held() == held - 100
    assert hooked.chain.balance(hooked.address) == token_balance
    assert hooked.market.functions.claimedOf(task_id, hooked.address).call() == 0
    # the refused leaf was genuine: claimed normally, it pays once
    hooked.act("claim", [task_id, 50, tree.proof(hooked.address)])
    assert hooked.held() == held - 150
    assert hooked.driver.get_state(task_id)["unclaimed"] == 0


def test_leave_reentering_leave_pays_the_stake_once(hooked, trainers):
    task_id, _ = hooked.driver.create_task()
    hooked.join_as_token(task_id)
    hooked.arm("leave", [task_id], bubble=False)
    held = hooked.held()

    hooked.act("leave", [task_id])

    succeeded, returned, reentries = hooked.last_reentry()
    assert (reentries, succeeded, returned[:4]) == (1, False, REENTRANT_CALL)
    assert hooked.held() == held - STAKE
    assert hooked.driver.get_state(task_id)["trainerCount"] == 0


def test_withdraw_stake_reentering_withdraw_stake_reverts_reentrancy_guard(hooked, owner, trainers):
    task_id, _ = hooked.driver.create_task()
    hooked.join_as_token(task_id)
    hooked.chain.tx(owner, hooked.market.functions.cancelTask(task_id))
    hooked.arm("withdrawStake", [task_id], bubble=True)
    held = hooked.held()

    error = reverts(hooked.act, "withdrawStake", [task_id])

    assert error.name == "ReentrancyGuardReentrantCall"
    assert hooked.held() == held == STAKE
    assert hooked.driver.get_trainer(task_id, hooked.address)["stake"] == STAKE
    hooked.chain.tx(hooked.deployer, hooked.token.functions.disarm())
    hooked.act("withdrawStake", [task_id])  # unarmed, it pays once
    assert hooked.held() == 0


def test_claim_reentering_another_function_is_refused(hooked, trainers):
    """The guard is shared: a payment from `claim` cannot re-enter `leave` either."""
    task_id, tree = settled_task(hooked, trainers, earnings={trainers[0].address: 100})
    hooked.join_as_token(task_id)
    hooked.arm("leave", [task_id], bubble=True)
    error = reverts(hooked.driver.claim, task_id, trainers[0], tree)
    assert error.name == "ReentrancyGuardReentrantCall"
    assert hooked.driver.get_trainer(task_id, hooked.address)["joined"] is True


def test_completion_refund_reentering_claim_reverts_reentrancy_guard(hooked, owner, trainers):
    """The refund sent to the owner after the last round is paid under the guard too."""
    driver = hooked.driver
    task_id, _ = driver.create_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.run_round(task_id, committers=trainers[:2])
    tree = RewardsTree({hooked.address: 10})
    hooked.arm("claim", [task_id, 10, tree.proof(hooked.address)], bubble=True)
    fn = hooked.market.functions.finalizeRound(task_id, bytes(32), tree.root, 10, bytes(32), [])
    error = reverts(hooked.chain.tx, driver.coordinator, fn)
    assert error.name == "ReentrancyGuardReentrantCall"
    assert error_args(error) == {}

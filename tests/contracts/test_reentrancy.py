"""Re-entrancy: a market over a token whose `transfer` calls back into the market.

`contracts/test/MockReentrantToken.sol` re-enters the market from inside the market's own
payment (as a token with transfer hooks, or a malicious one, would). Every paying function is
`nonReentrant` (settlement too: it runs in the market's context, behind the market's guard): the
inner call fails with `ReentrancyGuardReentrantCall`, and no token leaves the market beyond what
the outer call owed.
"""

from __future__ import annotations

import pytest
from eth_utils import function_signature_to_4byte_selector

from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts
from fedmarket.protocol import RoundPhase, make_commitment
from testkit.contracts import STAKE, VALIDATOR_STAKE, MarketDriver, digest, error_args, reverts

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

    def join_as_token(self, task_id: int, *, validator: bool = False):
        stake = VALIDATOR_STAKE if validator else STAKE
        self.chain.tx(self.deployer, self.token.functions.transfer(self.address, stake))
        self.act("approve", [self.market.address, stake], to=self.token)
        if validator:
            self.act("joinAsValidator", [task_id, digest("token split"), stake])
        else:
            self.act("join", [task_id])

    def last_reentry(self) -> tuple[bool, bytes, int]:
        fns = self.token.functions
        return fns.lastCallSucceeded().call(), fns.lastCallReturnData().call(), fns.reentries().call()

    def held(self) -> int:
        return self.chain.balance(self.market.address)


@pytest.fixture
def hooked(market_chain, artifacts, deployer, owner, coordinator, trainers, validators) -> Hooked:
    deployment = deploy_market(
        market_chain.w3, deployer, token=artifacts["MockReentrantToken"], market=artifacts["TaskMarket"]
    )
    funded = [owner.address, *(t.address for t in trainers[:3]), *(v.address for v in validators)]
    fund_accounts(market_chain.w3, deployment, deployer, funded, tokens=10_000 * ONE_TOKEN)
    chain = type(market_chain)(market_chain.w3, deployment)  # the same Chain helper, on the second market
    return Hooked(chain, MarketDriver(chain, owner, coordinator), deployer)


def settled_task(hooked: Hooked, trainers, validators, *, rounds: int = 3) -> int:
    """A task whose first round paid trainers[0:2], validators[0] and the token contract (a trainer)."""
    driver = hooked.driver
    task_id, _ = driver.create_task(rounds=rounds)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    hooked.join_as_token(task_id)
    run = driver.run_round(task_id, committers=trainers[:2], stop=RoundPhase.COMMIT)
    update, salt = digest("token update"), b"\x07" * 32
    hooked.act("commit", [task_id, make_commitment(task_id, 1, hooked.address, update, salt)])
    for trainer in trainers[:2]:
        driver.reveal(run, trainer)
    hooked.act("reveal", [task_id, update, salt])  # the last reveal: the score-commit phase opens
    driver.commit_scores(run, validators[0], driver.vector(run, validators[0].address))
    driver.reveal_scores(run, validators[0])
    driver.settle(task_id)
    return task_id


def claimable(hooked: Hooked, task_id: int, account: str) -> int:
    return hooked.driver.get_trainer(task_id, account)["claimable"]


def test_claim_reentering_claim_reverts_reentrancy_guard(hooked, trainers, validators):
    task_id = settled_task(hooked, trainers, validators)
    owed = claimable(hooked, task_id, trainers[0].address)
    assert owed > 0 and claimable(hooked, task_id, hooked.address) > 0
    hooked.arm("claim", [task_id], bubble=True)
    held = hooked.held()

    error = reverts(hooked.driver.claim, task_id, trainers[0])

    assert error.name == "ReentrancyGuardReentrantCall"
    assert hooked.held() == held
    assert claimable(hooked, task_id, trainers[0].address) == owed


def test_reentrant_claim_is_refused_and_nothing_extra_leaves(hooked, trainers, validators):
    task_id = settled_task(hooked, trainers, validators)
    owed, owed_to_token = (
        claimable(hooked, task_id, trainers[0].address),
        claimable(hooked, task_id, hooked.address),
    )
    hooked.arm("claim", [task_id], bubble=False)
    held, token_balance = hooked.held(), hooked.chain.balance(hooked.address)

    hooked.driver.claim(task_id, trainers[0])

    succeeded, returned, reentries = hooked.last_reentry()
    assert reentries == 1
    assert (succeeded, returned[:4]) == (False, REENTRANT_CALL)
    assert hooked.held() == held - owed
    assert hooked.chain.balance(hooked.address) == token_balance
    assert claimable(hooked, task_id, hooked.address) == owed_to_token
    # the refused balance was genuine: claimed normally, it pays once
    hooked.act("claim", [task_id])
    assert hooked.held() == held - owed - owed_to_token
    assert claimable(hooked, task_id, hooked.address) == 0


def test_leave_reentering_leave_pays_the_stake_once(hooked):
    task_id, _ = hooked.driver.create_task()
    hooked.join_as_token(task_id)
    hooked.arm("leave", [task_id], bubble=False)
    held = hooked.held()

    hooked.act("leave", [task_id])

    succeeded, returned, reentries = hooked.last_reentry()
    assert (reentries, succeeded, returned[:4]) == (1, False, REENTRANT_CALL)
    assert hooked.held() == held - STAKE
    assert hooked.driver.get_state(task_id)["trainerCount"] == 0


def test_leave_validator_reentering_leave_validator_pays_the_stake_once(hooked):
    task_id, _ = hooked.driver.create_task()
    hooked.join_as_token(task_id, validator=True)
    hooked.arm("leaveValidator", [task_id], bubble=False)
    held = hooked.held()

    hooked.act("leaveValidator", [task_id])

    succeeded, returned, reentries = hooked.last_reentry()
    assert (reentries, succeeded, returned[:4]) == (1, False, REENTRANT_CALL)
    assert hooked.held() == held - VALIDATOR_STAKE
    assert hooked.driver.get_state(task_id)["validatorCount"] == 0


def test_withdraw_stake_reentering_withdraw_stake_reverts_reentrancy_guard(hooked, owner):
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


def test_claim_reentering_another_function_is_refused(hooked, trainers, validators):
    """The guard is shared: a payment from `claim` cannot re-enter `leave` either."""
    task_id = settled_task(hooked, trainers, validators)
    hooked.arm("leave", [task_id], bubble=True)
    error = reverts(hooked.driver.claim, task_id, trainers[0])
    assert error.name == "ReentrancyGuardReentrantCall"
    assert hooked.driver.get_trainer(task_id, hooked.address)["joined"] is True


def test_completion_refund_reentering_claim_reverts_reentrancy_guard(hooked, trainers, validators):
    """The refund sent to the owner after the last round is paid under the market's guard, though
    settlement runs in TaskMarketSettlement."""
    task_id = settled_task(hooked, trainers, validators, rounds=2)
    driver = hooked.driver
    # worthless updates: the trainers' share of the last budget is refunded
    driver.run_round(task_id, committers=trainers[:2], scores=lambda v, revealers: [0] * len(revealers))
    assert driver.phase(task_id) == RoundPhase.SETTLING
    hooked.arm("claim", [task_id], bubble=True)
    error = reverts(driver.finalize, task_id)
    assert error.name == "ReentrancyGuardReentrantCall"
    assert error_args(error) == {}
    assert driver.phase(task_id) == RoundPhase.SETTLING


def test_burn_in_abort_reentering_claim_reverts_reentrancy_guard(hooked, trainers, validators):
    """abortRound's burn is a payment too: re-entered, the whole abort reverts."""
    task_id = settled_task(hooked, trainers, validators)
    driver = hooked.driver
    driver.run_round(task_id, committers=trainers[:2], revealers=trainers[:1])
    hooked.arm("claim", [task_id], bubble=True)
    error = reverts(driver.abort, task_id)
    assert error.name == "ReentrancyGuardReentrantCall"
    assert driver.get_trainer(task_id, trainers[1].address)["joined"] is True

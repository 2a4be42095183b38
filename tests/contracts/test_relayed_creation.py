"""createTaskFor: a task posted by a relayer with the owner's EIP-712 signature and permit."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from fedmarket.protocol import (
    PermitSignature,
    TaskStatus,
    create_task_typed_data,
    sign_permit,
    sign_task_terms,
)
from testkit.contracts import POOL, error_args, events, reverts

TOKEN_NAME = "FedMarket Token"


class Relay:
    """The owner's side (signatures made off-chain in Python) and the relayer's transaction."""

    def __init__(self, chain, owner, relayer):
        self.chain = chain
        self.owner = owner
        self.relayer = relayer
        self.chain_id = chain.w3.eth.chain_id

    def sign(self, terms, *, deadline: int, nonce: int | None = None, key=None) -> bytes:
        if nonce is None:
            nonce = self.chain.market.functions.nonces(self.owner.address).call()
        return sign_task_terms(
            key or self.owner.key, terms, nonce=nonce, deadline=deadline,
            chain_id=self.chain_id, market=self.chain.market.address,
        )  # fmt: skip

    def permit(self, value: int, *, deadline: int) -> PermitSignature:
        return sign_permit(
            self.owner.key,
            token_name=TOKEN_NAME,
            token=self.chain.token.address,
            chain_id=self.chain_id,
            spender=self.chain.market.address,
            value=value,
            nonce=self.chain.token.functions.nonces(self.owner.address).call(),
            deadline=deadline,
        )

    def create_fn(self, terms, *, deadline, signature, permit, owner=None):
        return self.chain.market.functions.createTaskFor(
            terms.as_tuple(), owner or self.owner.address, deadline, signature, permit.as_tuple()
        )

    def relay(self, terms, *, deadline, signature, permit, owner=None):
        fn = self.create_fn(terms, deadline=deadline, signature=signature, permit=permit, owner=owner)
        return self.chain.tx(self.relayer, fn)


@pytest.fixture
def relay(market_chain, owner, outsider) -> Relay:
    return Relay(market_chain, owner, outsider)


def allowance(chain, owner) -> int:
    return chain.token.functions.allowance(owner.address, chain.market.address).call()


def test_create_task_for_by_relayer_posts_owners_task_funded_by_permit(
    driver, market_chain, relay, owner, outsider
):
    assert allowance(market_chain, owner) == 0  # no approval transaction from the owner
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    permit = relay.permit(POOL, deadline=deadline)
    owner_before, relayer_before = market_chain.balance(owner.address), market_chain.balance(outsider.address)
    owner_nonce_before = market_chain.w3.eth.get_transaction_count(owner.address)

    receipt = relay.relay(terms, deadline=deadline, signature=signature, permit=permit)

    (created,) = events(market_chain, receipt, "TaskCreated")
    assert (created["owner"], created["coordinator"]) == (owner.address, driver.coordinator.address)
    assert tuple(created["terms"].values()) == terms.as_tuple()
    task_id = created["taskId"]
    assert driver.get_terms(task_id) == terms
    state = driver.get_state(task_id)
    assert (state["owner"], state["status"], state["pool"]) == (owner.address, TaskStatus.OPEN, POOL)
    assert market_chain.market.functions.nonces(owner.address).call() == 1
    assert market_chain.balance(owner.address) == owner_before - POOL
    assert market_chain.balance(outsider.address) == relayer_before
    assert allowance(market_chain, owner) == 0
    # the owner sent no transaction
    assert market_chain.w3.eth.get_transaction_count(owner.address) == owner_nonce_before
    # the owner, not the relayer, owns the task
    cancel = market_chain.market.functions.cancelTask(task_id)
    assert reverts(market_chain.tx, outsider, cancel).name == "TaskMarketNotTaskOwner"
    market_chain.tx(owner, market_chain.market.functions.cancelTask(task_id))
    assert market_chain.balance(owner.address) == owner_before


@pytest.mark.parametrize(
    "altered",
    [
        {"reward_pool": POOL // 2},
        {"coordinator": "0x000000000000000000000000000000000000dEaD"},
        {"min_stake": 1},
        {"slash_bps": 0},
        {"rounds": 30},
        {"min_trainers": 1},
        {"reveal_window": 1},
        {"spec_hash": b"\x07" * 32},
        {"min_validators": 2},
        {"max_validators": 3},
        {"validator_share_bps": 0},
        {"score_window": 1},
        {"score_reveal_window": 1},
        {"min_validator_stake": 1},
    ],
    ids=lambda d: next(iter(d)),
)
def test_relayer_altering_a_term_reverts_invalid_signature(driver, market_chain, relay, owner, altered):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    permit = relay.permit(POOL, deadline=deadline)

    altered_terms = replace(terms, **altered)
    error = reverts(relay.relay, altered_terms, deadline=deadline, signature=signature, permit=permit)

    assert error.name == "TaskMarketInvalidSignature"
    assert error_args(error) == {"owner": owner.address}
    assert market_chain.market.functions.taskCount().call() == 0
    assert market_chain.market.functions.nonces(owner.address).call() == 0
    # the genuine terms still go through
    relay.relay(terms, deadline=deadline, signature=signature, permit=permit)


def test_relayer_altering_deadline_or_owner_reverts_invalid_signature(
    driver, market_chain, relay, owner, outsider
):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    permit = relay.permit(POOL, deadline=deadline)
    error = reverts(relay.relay, terms, deadline=deadline + 1, signature=signature, permit=permit)
    assert error.name == "TaskMarketInvalidSignature"
    error = reverts(
        relay.relay, terms, deadline=deadline, signature=signature, permit=permit, owner=outsider.address
    )
    assert error.name == "TaskMarketInvalidSignature"
    assert error_args(error) == {"owner": outsider.address}


def test_signature_by_someone_else_reverts_invalid_signature(driver, market_chain, relay, owner, outsider):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    forged = relay.sign(terms, deadline=deadline, key=outsider.key)
    permit = relay.permit(POOL, deadline=deadline)
    error = reverts(relay.relay, terms, deadline=deadline, signature=forged, permit=permit)
    assert error.name == "TaskMarketInvalidSignature"
    error = reverts(relay.relay, terms, deadline=deadline, signature=b"\x00" * 65, permit=permit)
    assert error.name == "TaskMarketInvalidSignature"


def test_replayed_signature_reverts_invalid_signature(driver, market_chain, relay, owner):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    relay.relay(terms, deadline=deadline, signature=signature, permit=relay.permit(POOL, deadline=deadline))
    owner_before = market_chain.balance(owner.address)

    # even with a fresh permit, the signature's nonce is used up
    permit = relay.permit(POOL, deadline=deadline)
    error = reverts(relay.relay, terms, deadline=deadline, signature=signature, permit=permit)

    assert error.name == "TaskMarketInvalidSignature"
    assert market_chain.market.functions.taskCount().call() == 1
    assert market_chain.balance(owner.address) == owner_before


def test_expired_deadline_reverts_signature_expired(driver, market_chain, relay, owner):
    terms = driver.terms()
    deadline = market_chain.now() + 60
    signature = relay.sign(terms, deadline=deadline)
    permit = relay.permit(POOL, deadline=deadline + 3600)
    market_chain.advance(120)
    error = reverts(relay.relay, terms, deadline=deadline, signature=signature, permit=permit)
    assert error.name == "TaskMarketSignatureExpired"
    assert error_args(error) == {"deadline": deadline}


def test_hash_task_terms_equals_python_eip712_digest(driver, market_chain, owner):
    terms = driver.terms(
        rounds=7, slash_bps=123, commit_window=77, reveal_window=88, min_stake=5, min_validators=2,
        max_validators=9, validator_share_bps=4_321, score_window=99, score_reveal_window=111,
        min_validator_stake=2**90 + 3,
    )  # fmt: skip
    for nonce, deadline in [(0, 1), (3, 2**40), (2**200, 2**256 - 1)]:
        typed = create_task_typed_data(
            terms, owner=owner.address, nonce=nonce, deadline=deadline,
            chain_id=market_chain.w3.eth.chain_id, market=market_chain.market.address,
        )  # fmt: skip
        signable = encode_typed_data(full_message=typed)
        python_digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
        fn = market_chain.market.functions.hashTaskTerms(terms.as_tuple(), owner.address, nonce, deadline)
        on_chain = fn.call()
        assert on_chain == python_digest


def test_permit_front_run_by_someone_else_is_tolerated(driver, market_chain, relay, owner, outsider):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    permit = relay.permit(POOL, deadline=deadline)
    # someone submits the permit first: the market's own permit call then fails, the allowance stays
    market_chain.tx(
        outsider,
        market_chain.token.functions.permit(
            owner.address,
            market_chain.market.address,
            permit.value,
            permit.deadline,
            permit.v,
            permit.r,
            permit.s,
        ),
    )
    receipt = relay.relay(terms, deadline=deadline, signature=signature, permit=permit)
    assert events(market_chain, receipt, "TaskCreated")[0]["owner"] == owner.address
    assert driver.get_state(1)["pool"] == POOL


def test_relayed_task_without_permit_or_allowance_pulls_nothing(driver, market_chain, relay, owner):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    bogus = PermitSignature(POOL, deadline, 27, b"\x01" * 32, b"\x02" * 32)
    error = reverts(relay.relay, terms, deadline=deadline, signature=signature, permit=bogus)
    assert error.name == "ERC20InsufficientAllowance"
    assert market_chain.market.functions.nonces(owner.address).call() == 0
    assert market_chain.market.functions.taskCount().call() == 0


def test_relayed_task_with_invalid_terms_reverts_invalid_terms(driver, market_chain, relay):
    terms = driver.terms(rounds=0)
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    fresh_permit = relay.permit(POOL, deadline=deadline)
    error = reverts(relay.relay, terms, deadline=deadline, signature=signature, permit=fresh_permit)
    assert error.name == "TaskMarketInvalidTerms"
    assert error.args["field"] == "rounds"


def test_relayed_creation_while_paused_reverts_enforced_pause(driver, market_chain, relay, deployer):
    terms = driver.terms()
    deadline = market_chain.now() + 3600
    signature = relay.sign(terms, deadline=deadline)
    market_chain.tx(deployer, market_chain.market.functions.pause())
    fresh_permit = relay.permit(POOL, deadline=deadline)
    error = reverts(relay.relay, terms, deadline=deadline, signature=signature, permit=fresh_permit)
    assert error.name == "EnforcedPause"


def test_each_relayed_task_uses_the_next_nonce(driver, market_chain, relay, owner):
    deadline = market_chain.now() + 3600
    for expected_nonce in range(2):
        terms = driver.terms(spec_hash=bytes([expected_nonce + 1]) * 32)
        signature = relay.sign(terms, deadline=deadline, nonce=expected_nonce)
        fresh_permit = relay.permit(POOL, deadline=deadline)
        relay.relay(terms, deadline=deadline, signature=signature, permit=fresh_permit)
    assert market_chain.market.functions.nonces(owner.address).call() == 2
    assert market_chain.market.functions.taskCount().call() == 2
    # a signature for a skipped-ahead nonce is refused
    terms = driver.terms()
    signature = relay.sign(terms, deadline=deadline, nonce=5)
    fresh_permit = relay.permit(POOL, deadline=deadline)
    error = reverts(relay.relay, terms, deadline=deadline, signature=signature, permit=fresh_permit)
    assert error.name == "TaskMarketInvalidSignature"

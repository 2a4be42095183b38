"""MarketClient against the real contracts on the session Anvil (tests/conftest.py).

Every test runs in its own `chain` snapshot and builds fresh clients (a snapshot revert resets
the nonces that a client's sender caches).
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from fedmarket.chain import ChainEvent, CommitmentInfo, CreateTaskResult, MarketClient, TxResult
from fedmarket.consensus import INVALID, compute_consensus
from fedmarket.deploy import ONE_TOKEN, deploy_market
from fedmarket.devnet import Anvil, free_port
from fedmarket.errors import ChainError, ChainUnavailableError, ContractRevert, DeploymentNotFoundError
from fedmarket.ledger import read_round
from fedmarket.protocol import (
    Outcome,
    RoundPhase,
    TaskStatus,
    TaskTerms,
    make_commitment,
    make_score_commitment,
    new_salt,
)

POOL = 3_000 * ONE_TOKEN
STAKE = 10 * ONE_TOKEN
COMMIT_WINDOW = 600
REVEAL_WINDOW = 600


def h(label: str) -> bytes:
    """A 32-byte stand-in for a sha256 of a blob (model, update, report, spec)."""
    return keccak(text=label)


def make_terms(coordinator: str, **overrides) -> TaskTerms:
    values = dict(
        spec_hash=h("spec"),
        coordinator=coordinator,
        rounds=3,
        min_trainers=2,
        max_trainers=3,
        slash_bps=5_000,
        commit_window=COMMIT_WINDOW,
        reveal_window=REVEAL_WINDOW,
        reward_pool=POOL,
        min_stake=STAKE,
        min_validators=2,
        max_validators=2,
        validator_share_bps=1_000,
        score_window=COMMIT_WINDOW,
        score_reveal_window=REVEAL_WINDOW,
        min_validator_stake=STAKE,
    )
    values.update(overrides)
    return TaskTerms(**values)


def advance(w3: Web3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


@dataclasses.dataclass
class Roles:
    """One fresh client per role, all on the test's snapshot."""

    w3: Web3
    admin: MarketClient
    owner: MarketClient
    coordinator: MarketClient
    outsider: MarketClient
    trainers: list[MarketClient]
    reader: MarketClient

    @property
    def validators(self) -> list[MarketClient]:
        return [self.owner, self.outsider]

    @property
    def terms(self) -> TaskTerms:
        return make_terms(self.coordinator.address)


@pytest.fixture
def roles(chain, deployment, deployer, owner, coordinator, outsider, trainers) -> Roles:
    def client(account=None) -> MarketClient:
        return MarketClient(chain, deployment, account)

    return Roles(
        w3=chain,
        admin=client(deployer),
        owner=client(owner),
        coordinator=client(coordinator),
        outsider=client(outsider),
        trainers=[client(t) for t in trainers[:3]],
        reader=client(),
    )


def open_task_with_trainers(roles: Roles, count: int = 3, **overrides) -> int:
    """A task with `count` trainers and two validators (the owner's and the outsider's) joined."""
    task_id = roles.owner.create_task(make_terms(roles.coordinator.address, **overrides)).task_id
    for trainer in roles.trainers[:count]:
        trainer.join(task_id)
    for validator in roles.validators:
        validator.join_as_validator(task_id, h(f"data of {validator.address}"))
    return task_id


def score_round(roles: Roles, task_id: int, round_no: int, vector_for) -> dict[str, tuple]:
    """Each validator commits `vector_for(trainers in contract order)`, then all reveal."""
    trainers = read_round(roles.reader, task_id, round_no).trainers
    secrets = {}
    for validator in roles.validators:
        vector, salt = vector_for(trainers), new_salt()
        validator.commit_scores(
            task_id, make_score_commitment(task_id, round_no, validator.address, vector, salt)
        )
        secrets[validator.address] = (vector, salt)
    for validator in roles.validators:
        validator.reveal_scores(task_id, *secrets[validator.address])
    return secrets


def commit_all(roles: Roles, task_id: int, trainers: list[MarketClient], round_no: int) -> dict[str, tuple]:
    """Each trainer commits to a fresh update hash; returns {address: (update_hash, salt)}."""
    secrets = {}
    for trainer in trainers:
        update, salt = h(f"update {task_id}/{round_no}/{trainer.address}"), new_salt()
        trainer.commit(task_id, make_commitment(task_id, round_no, trainer.address, update, salt))
        secrets[trainer.address] = (update, salt)
    return secrets


def expect_revert(name: str, call, *args, **kwargs) -> dict:
    with pytest.raises(ContractRevert) as caught:
        call(*args, **kwargs)
    assert caught.value.name == name, str(caught.value)
    return caught.value.args


# ------------------------------------------------------------------------------------ connect


def test_connect_reads_the_deployments_file_and_signs_with_the_key(chain, anvil, deployment, owner, tmp_path):
    path = tmp_path / "deployments" / "local.json"
    deployment.write(path)
    client = MarketClient.connect(anvil.url, path, private_key=owner.key.hex())
    assert client.address == owner.address and not client.read_only
    assert client.token_of_market() == deployment.token
    reader = MarketClient.connect(anvil.url, str(path))
    assert reader.read_only and reader.address is None
    assert reader.task_count() == 0


def test_connect_to_another_chain_id_fails_clearly(chain, anvil, deployment):
    elsewhere = dataclasses.replace(deployment, chain_id=1)
    with pytest.raises(ChainError, match=r"chain 31337, but deployment 'local' is on chain 1"):
        MarketClient(chain, elsewhere)
    with pytest.raises(ChainError, match="chain 31337"):
        MarketClient.connect(anvil.url, elsewhere)


def test_client_refuses_a_market_address_without_code(chain, deployment, outsider):
    with pytest.raises(ChainError, match="no contract at market address"):
        MarketClient(chain, dataclasses.replace(deployment, market=outsider.address))


def test_connect_without_deployments_file_fails_clearly(tmp_path):
    with pytest.raises(DeploymentNotFoundError):
        MarketClient.connect("http://127.0.0.1:1", tmp_path / "missing.json")


def test_connect_to_a_closed_port_raises_chain_unavailable(deployment):
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainUnavailableError) as caught:
        MarketClient.connect(closed, deployment)
    error = caught.value
    assert error.endpoint == closed and error.doing == "reading eth_chainId"
    assert "Connection refused" in error.reason  # the socket's error, not requests' wrappers
    assert str(error).startswith(f"cannot reach the chain at {closed} while reading eth_chainId (")
    assert "is the node running? check FEDMARKET_RPC_URL" in str(error)


def test_read_only_client_reads_but_refuses_to_send(roles):
    task_id = roles.owner.create_task(roles.terms).task_id
    assert roles.reader.task(task_id).owner == roles.owner.address
    for write in (
        lambda: roles.reader.join(task_id),
        lambda: roles.reader.create_task(roles.terms),
        lambda: roles.reader.approve(1),
        lambda: roles.reader.transfer(roles.owner.address, 1),
        lambda: roles.reader.pause(),
        lambda: roles.reader.sign_permit(1, deadline=2**40),
    ):
        with pytest.raises(ChainError, match="read-only client: pass a private key"):
            write()


# ------------------------------------------------------------------------------------ life cycle


def test_task_life_cycle_through_every_round_outcome(roles):
    owner, coord, outsider, (t0, t1, t2) = roles.owner, roles.coordinator, roles.outsider, roles.trainers
    terms = roles.terms
    owner_before = owner.token_balance()

    # create: approves the pool, returns the id from TaskCreated
    created = owner.create_task(terms)
    assert isinstance(created, CreateTaskResult)
    assert created.task_id == 1 == roles.reader.task_count()
    assert created.tx_hash.startswith("0x") and len(created.tx_hash) == 66
    assert created.gas_used > 0 and created.block_number == roles.reader.block_number()
    event = created.event("TaskCreated")
    assert event.args == {"taskId": 1, "owner": owner.address, "coordinator": coord.address, "terms": terms}
    task_id = created.task_id
    info = roles.reader.task(task_id)
    assert (info.terms, info.owner, info.status) == (terms, owner.address, TaskStatus.OPEN)
    assert (info.pool, info.unclaimed, info.trainer_count, info.validator_count, info.rounds_left) == (
        POOL,
        0,
        0,
        0,
        3,
    )
    assert owner.token_balance() == owner_before - POOL
    assert owner.ensure_allowance(0) is None  # nothing to approve, nothing sent

    # join x3 trainers, x2 validators (the owner's split and the outsider's)
    for trainer in (t0, t1, t2):
        args = trainer.join(task_id).event("TrainerJoined").args
        assert args == {"taskId": task_id, "trainer": trainer.address, "stake": STAKE}
    for validator in roles.validators:
        args = (
            validator.join_as_validator(task_id, h(f"data {validator.address}")).event("ValidatorJoined").args
        )
        assert args == {
            "taskId": task_id, "validator": validator.address, "stake": STAKE, "dataHash": h(f"data {validator.address}")
        }  # fmt: skip
    assert t0.trainer(task_id) == t0.trainer(task_id, t0.address)
    assert t0.trainer(task_id).joined and t0.trainer(task_id).stake == STAKE
    assert outsider.validator(task_id).data_hash == h(f"data {outsider.address}")
    assert roles.reader.phase(task_id) is RoundPhase.NONE
    assert roles.reader.round_budget(task_id) == POOL // 3

    # round 1: everyone commits and reveals, the validators score, anyone settles
    round_started = coord.start_round(task_id, h("model 0")).event("RoundStarted").args
    assert round_started["round"] == 1 and round_started["modelHash"] == h("model 0")
    assert roles.reader.phase(task_id) is RoundPhase.COMMIT
    secrets = commit_all(roles, task_id, [t0, t1, t2], 1)
    update0, salt0 = secrets[t0.address]
    assert t0.commitment(task_id) == CommitmentInfo(
        1, make_commitment(task_id, 1, t0.address, update0, salt0), False
    )
    assert roles.reader.phase(task_id) is RoundPhase.REVEAL  # everyone committed: early close
    for trainer in (t0, t1, t2):
        revealed = trainer.reveal(task_id, *secrets[trainer.address])
        assert revealed.event("Revealed").args["updateHash"] == secrets[trainer.address][0]
    assert roles.reader.phase(task_id) is RoundPhase.SCORE_COMMIT
    weights = {t0.address: 4, t1.address: 3, t2.address: 3}
    score_round(roles, task_id, 1, lambda trainers: [weights[t] * 1000 for t in trainers])
    assert outsider.score_commitment(task_id).revealed
    assert roles.reader.phase(task_id) is RoundPhase.SETTLING

    budget = roles.reader.round_budget(task_id)
    ledger = read_round(roles.reader, task_id, 1)
    expected = compute_consensus(
        trainers=ledger.trainers, validators=ledger.validators, stakes=[STAKE, STAKE],
        scores=[ledger.score_reveals[v] for v in ledger.validators], budget=budget, validator_share_bps=1_000,
    )  # fmt: skip
    finalized = roles.trainers[0].finalize_round(task_id, ledger.settlement())  # anyone may settle
    settled = {e.args["trainer"]: e.args for e in finalized.events if e.name == "TrainerSettled"}
    for result in expected.trainers:
        assert (settled[result.trainer]["outcome"], settled[result.trainer]["payout"]) == (
            Outcome.ACCEPTED,
            result.payout,
        )
    assert settled[t0.address]["payout"] == 900 * ONE_TOKEN * 4 // 10
    finished = finalized.event("RoundFinalized").args
    assert (finished["trainerPayout"], finished["validatorPayout"], finished["burned"]) == (
        900 * ONE_TOKEN, 100 * ONE_TOKEN, 0
    )  # fmt: skip
    assert roles.reader.phase(task_id) is RoundPhase.FINALIZED
    expect_revert("TaskMarketModelNotPublished", coord.start_round, task_id, h("model 1"))
    published = coord.publish_model(task_id, h("model 1"), h("report 1")).event("ModelPublished").args
    assert published == {
        "taskId": task_id,
        "round": 1,
        "modelHash": h("model 1"),
        "reportHash": h("report 1"),
    }
    round1 = roles.reader.round(task_id, 1)
    assert (round1.closed, round1.aborted, round1.model_published) == (True, False, True)
    assert (round1.model_hash, round1.new_model_hash, round1.report_hash) == (
        h("model 0"),
        h("model 1"),
        h("report 1"),
    )
    assert round1.payout == 1_000 * ONE_TOKEN and roles.reader.task(task_id).unclaimed == 1_000 * ONE_TOKEN

    before = t0.token_balance()
    assert t0.claim(task_id).event("RewardsClaimed").args["amount"] == 360 * ONE_TOKEN
    assert t0.token_balance() == before + 360 * ONE_TOKEN and t0.claimable(task_id) == 0
    message = rf"^TaskMarketNothingToClaim\(taskId=1, account={t0.address}\)$"
    with pytest.raises(ContractRevert, match=message):
        t0.claim(task_id)

    # round 2: both validators flag t2's update invalid: rejected, its stake slashed and burned
    args = expect_revert("TaskMarketModelMismatch", coord.start_round, task_id, h("another model"))
    assert args["expected"] == "0x" + h("model 1").hex()
    coord.start_round(task_id, h("model 1"))
    secrets = commit_all(roles, task_id, [t0, t1, t2], 2)
    for trainer in (t0, t1, t2):
        trainer.reveal(task_id, *secrets[trainer.address])
    score_round(roles, task_id, 2, lambda trainers: [INVALID if t == t2.address else 1000 for t in trainers])
    settled_round = outsider.finalize_round(task_id, read_round(roles.reader, task_id, 2).settlement())
    slashed = settled_round.event("TrainerSlashed").args
    assert slashed == {"taskId": task_id, "round": 2, "trainer": t2.address, "amount": STAKE // 2}
    assert settled_round.event("RoundFinalized").args["burned"] == STAKE // 2
    assert t2.trainer(task_id).joined is False and t2.trainer(task_id).stake == STAKE // 2
    assert t2.withdraw_stake(task_id).event("StakeWithdrawn").args["amount"] == STAKE // 2
    coord.publish_model(task_id, h("model 2"), h("report 2"))

    # round 3: t1 commits but never reveals; the quorum fails and anyone aborts, completing the task
    coord.start_round(task_id, h("model 2"))
    secrets = commit_all(roles, task_id, [t0, t1], 3)
    t0.reveal(task_id, *secrets[t0.address])
    advance(roles.w3, REVEAL_WINDOW + COMMIT_WINDOW + REVEAL_WINDOW + 1)  # reveal and both score windows
    assert roles.reader.phase(task_id) is RoundPhase.SETTLING
    pool_left = roles.reader.task(task_id).pool
    owner_before = owner.token_balance()
    aborted = outsider.abort_round(task_id, [t1.address])
    assert [e.name for e in aborted.events] == ["TrainerSlashed", "RoundAborted", "TaskCompleted"]
    assert aborted.event("TaskCompleted").args == {"taskId": task_id, "refund": pool_left}
    assert owner.token_balance() == owner_before + pool_left  # the slash is burned, not refunded
    assert roles.reader.round(task_id).aborted  # default: the current round
    done = roles.reader.task(task_id)
    assert (done.status, done.pool, done.current_round, done.rounds_left) == (TaskStatus.COMPLETED, 0, 3, 0)

    # the task ended: every stake comes back, and money held == what is owed
    assert t0.withdraw_stake(task_id).event("StakeWithdrawn").args["amount"] == STAKE
    assert t1.withdraw_stake(task_id).event("StakeWithdrawn").args["amount"] == STAKE // 2
    for validator in roles.validators:
        assert validator.withdraw_stake(task_id).event("StakeWithdrawn").args["amount"] == STAKE
    assert roles.reader.token_balance(roles.reader.market_address) == done.unclaimed


def test_leave_returns_the_stake_and_cancel_refunds_the_owner(roles):
    owner, t0 = roles.owner, roles.trainers[0]
    task_id = owner.create_task(roles.terms).task_id
    before = t0.token_balance()
    t0.join(task_id)
    left = t0.leave(task_id)
    assert left.event("TrainerLeft").args == {"taskId": task_id, "trainer": t0.address, "stake": STAKE}
    assert t0.token_balance() == before and roles.reader.task(task_id).trainer_count == 0

    owner_before = owner.token_balance()
    cancelled = owner.cancel_task(task_id)
    assert cancelled.event("TaskCancelled").args == {"taskId": task_id, "refund": POOL}
    assert owner.token_balance() == owner_before + POOL
    assert roles.reader.task(task_id).status is TaskStatus.CANCELLED
    assert roles.reader.round_budget(task_id) == 0


def test_pause_stops_new_tasks_until_unpaused(roles):
    assert roles.reader.admin() == roles.admin.address and not roles.reader.paused()
    assert roles.admin.pause().event("Paused").args == {"account": roles.admin.address}
    assert roles.reader.paused()
    expect_revert("EnforcedPause", roles.owner.create_task, roles.terms)
    args = expect_revert("OwnableUnauthorizedAccount", roles.outsider.unpause)
    assert args == {"account": roles.outsider.address}
    assert roles.admin.unpause().event("Unpaused").args == {"account": roles.admin.address}
    assert roles.owner.create_task(roles.terms).task_id == 1


# ------------------------------------------------------------------------------------ reverts


def test_reverts_are_decoded_into_named_errors_with_arguments(roles):
    coord, outsider, (t0, t1, t2) = roles.coordinator, roles.outsider, roles.trainers
    task_id = open_task_with_trainers(roles)

    assert expect_revert("TaskMarketAlreadyJoined", t0.join, task_id, auto_approve=False) == {
        "taskId": task_id, "trainer": t0.address
    }  # fmt: skip
    assert expect_revert("TaskMarketNotCoordinator", outsider.start_round, task_id, h("m")) == {
        "taskId": task_id, "account": outsider.address
    }  # fmt: skip
    # a token error from the same call path: join without approving the stake
    other = roles.owner.create_task(roles.terms).task_id
    assert expect_revert("ERC20InsufficientAllowance", outsider.join, other, auto_approve=False) == {
        "spender": roles.reader.market_address, "allowance": 0, "needed": STAKE
    }  # fmt: skip

    coord.start_round(task_id, h("model 0"))
    update, salt = h("update"), new_salt()
    t0.commit(task_id, make_commitment(task_id, 1, t0.address, update, salt))
    args = expect_revert("TaskMarketWrongPhase", t0.reveal, task_id, update, salt)
    assert args == {"taskId": task_id, "phase": RoundPhase.COMMIT}
    secrets = commit_all(roles, task_id, [t1, t2], 1)
    args = expect_revert("TaskMarketCommitmentMismatch", t0.reveal, task_id, update, new_salt())
    assert args == {"taskId": task_id, "trainer": t0.address}

    # views decode reverts too (eth_call path), on a read-only client
    assert expect_revert("TaskMarketUnknownTask", roles.reader.task, 999) == {"taskId": 999}
    assert expect_revert("TaskMarketUnknownTask", roles.reader.phase, 999) == {"taskId": 999}

    t0.reveal(task_id, update, salt)
    t1.reveal(task_id, *secrets[t1.address])
    advance(roles.w3, REVEAL_WINDOW + 1)  # t2 never reveals
    score_round(roles, task_id, 1, lambda trainers: [1000] * len(trainers))
    settlement = read_round(roles.reader, task_id, 1).settlement()
    incomplete = dataclasses.replace(settlement, non_revealers=())
    args = expect_revert("TaskMarketNonRevealersMismatch", coord.finalize_round, task_id, incomplete)
    assert args == {"taskId": task_id, "listed": 0, "expected": 1}
    coord.finalize_round(task_id, settlement)


def test_bad_hash_inputs_are_refused_before_sending(roles):
    with pytest.raises(ValueError, match="model_hash must be 32 bytes"):
        roles.coordinator.start_round(1, b"short")
    with pytest.raises(ValueError, match="commitment must be 32 bytes or their hex"):
        roles.trainers[0].commit(1, "0xnothex")


# ------------------------------------------------------------------------------------ relaying


def test_signed_task_is_relayed_by_another_account(roles):
    owner, relayer, w3 = roles.owner, roles.coordinator, roles.w3
    terms = roles.terms
    owner_eth, owner_tokens = w3.eth.get_balance(owner.address), owner.token_balance()

    signed = owner.sign_create_task(terms)
    assert signed.owner == owner.address and signed.permit.value == terms.reward_pool
    assert owner.nonce_of() == 0 and owner.permit_nonce() == 0  # signing sends nothing
    # the signature is over exactly the digest the contract computes
    digest = roles.reader.hash_task_terms(terms, owner=owner.address, nonce=0, deadline=signed.deadline)
    assert Account._recover_hash(digest, signature=signed.owner_signature) == owner.address
    # the low-level methods give the same signature
    assert owner.sign_task_terms(terms, deadline=signed.deadline) == signed.owner_signature
    assert owner.sign_permit(terms.reward_pool, deadline=signed.deadline) == signed.permit

    # dry run first (what the API does before paying gas), read-only or not
    assert roles.reader.simulate_create_task_for(**signed.as_kwargs()) == 1
    assert relayer.simulate_create_task_for(**signed.as_kwargs()) == 1
    created = relayer.create_task_for(
        signed.terms, signed.owner, signed.deadline, signed.owner_signature, signed.permit
    )
    assert created.task_id == 1 and created.event("TaskCreated").args["owner"] == owner.address
    info = roles.reader.task(1)
    assert (info.owner, info.terms, info.pool) == (owner.address, terms, POOL)
    assert owner.token_balance() == owner_tokens - POOL
    assert w3.eth.get_balance(owner.address) == owner_eth  # the owner paid no gas
    assert owner.nonce_of() == 1 and owner.permit_nonce() == 1

    # a replay carries a used nonce; a changed term breaks the signature; late is late
    assert expect_revert("TaskMarketInvalidSignature", relayer.create_task_for, **signed.as_kwargs()) == {
        "owner": owner.address
    }  # fmt: skip
    fresh = owner.sign_create_task(terms)
    changed = dataclasses.replace(terms, coordinator=relayer.address, rounds=1)
    tampered = {**fresh.as_kwargs(), "terms": changed}
    expect_revert("TaskMarketInvalidSignature", relayer.simulate_create_task_for, **tampered)
    past = owner.chain_time() - 1
    late = owner.sign_create_task(terms, deadline=past)
    args = expect_revert("TaskMarketSignatureExpired", relayer.simulate_create_task_for, **late.as_kwargs())
    assert args == {"deadline": past}
    assert relayer.create_task_for(**fresh.as_kwargs()).task_id == 2


# ------------------------------------------------------------------------------------ events


def test_iter_events_pages_filters_and_keeps_chain_order(roles):
    t0, t1 = roles.trainers[:2]
    first = open_task_with_trainers(roles, count=2)
    second = open_task_with_trainers(roles, count=1)
    roles.coordinator.start_round(first, h("model 0"))
    commit_all(roles, first, [t0, t1], 1)
    roles.trainers[0].leave(second)

    everything = list(roles.reader.iter_events(page_size=100_000))
    names = [e.name for e in everything]
    assert names[0] == "OwnershipTransferred"  # the market's constructor, in the deploy block range
    assert names.count("TaskCreated") == 2 and names.count("TrainerJoined") == 3
    assert names[-3:] == ["Committed", "Committed", "TrainerLeft"]
    positions = [(e.block_number, e.log_index) for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert all(isinstance(e, ChainEvent) and e.tx_hash.startswith("0x") for e in everything)

    # paging never changes what comes back
    assert list(roles.reader.iter_events(page_size=1)) == everything
    assert list(roles.reader.iter_events(page_size=2)) == everything

    # filters: by name, by task (indexed topic), both, and by block range
    joined = list(roles.reader.iter_events("TrainerJoined", page_size=3))
    assert joined == [e for e in everything if e.name == "TrainerJoined"]
    of_first = list(roles.reader.iter_events(task_id=first, page_size=2))
    assert of_first == [e for e in everything if e.task_id == first]
    joined_second = roles.reader.iter_events("TrainerJoined", task_id=second)
    assert [e.args["trainer"] for e in joined_second] == [t0.address]
    created = [e for e in everything if e.name == "TaskCreated"]
    block = created[1].block_number
    window = list(roles.reader.iter_events(from_block=block, to_block=block))
    assert window == [created[1]]
    assert list(roles.reader.iter_events(from_block=10**6)) == []

    # Python-friendly values
    task_created = created[0].args
    assert task_created["terms"] == roles.terms and task_created["owner"] == roles.owner.address
    assert everything[-2].args["commitment"].__class__ is bytes
    started = next(roles.reader.iter_events("RoundStarted"))
    assert started.args["modelHash"] == h("model 0") and started.task_id == first

    with pytest.raises(ValueError, match="no event 'Nope'"):
        roles.reader.iter_events("Nope")
    with pytest.raises(ValueError, match="no indexed taskId"):
        roles.reader.iter_events("Paused", task_id=first)
    with pytest.raises(ValueError, match="page_size"):
        roles.reader.iter_events(page_size=0)


def test_logs_of_events_missing_from_the_abi_are_skipped_with_a_warning(roles, deployment, caplog):
    task_id = open_task_with_trainers(roles, count=2)
    abi = [e for e in deployment.market_abi if e.get("name") != "TrainerJoined"]
    older = MarketClient(roles.w3, dataclasses.replace(deployment, market_abi=abi))
    with caplog.at_level("WARNING", logger="fedmarket.chain"):
        names = [e.name for e in older.iter_events(task_id=task_id)]
    # TrainerJoined is no longer known, so not even asked for; the validators' joins still are
    assert names == ["TaskCreated", "ValidatorJoined", "ValidatorJoined"]
    with caplog.at_level("WARNING", logger="fedmarket.chain"):
        names = [e.name for e in older.iter_events()]
    assert "TrainerJoined" not in names and "TaskCreated" in names
    assert sum("not an event of the market ABI" in r.message for r in caplog.records) == 2


def test_token_transactions_return_the_token_events(roles):
    approved = roles.owner.approve(5)
    assert approved.events[0].name == "Approval"
    spender = roles.reader.market_address
    assert approved.events[0].args == {"owner": roles.owner.address, "spender": spender, "value": 5}
    assert roles.owner.allowance() == 5
    assert roles.owner.ensure_allowance(5) is None
    assert roles.owner.ensure_allowance(6).event("Approval").args["value"] == 6
    sent = roles.owner.transfer(roles.outsider.address, 7)
    assert isinstance(sent, TxResult) and sent.event("Transfer").args["to"] == roles.outsider.address
    assert roles.reader.settlement_grace() > 0
    assert roles.reader.chain_time() == roles.w3.eth.get_block("latest")["timestamp"]


# ------------------------------------------------------------------------------------ threads


def test_one_client_sends_from_many_threads_with_consecutive_nonces(roles, trainers):
    client, w3 = roles.outsider, roles.w3
    first_nonce = w3.eth.get_transaction_count(client.address)
    recipients = [t.address for t in trainers[:10]]
    balances = {r: client.token_balance(r) for r in recipients}
    results: list[TxResult] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(recipient: str) -> None:
        try:
            sent = [client.transfer(recipient, ONE_TOKEN), client.approve(ONE_TOKEN, recipient)]
            with lock:
                results.extend(sent)
        except BaseException as exc:  # surfaced by the assert below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in recipients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(results) == 20
    nonces = sorted(w3.eth.get_transaction(r.tx_hash)["nonce"] for r in results)
    assert nonces == list(range(first_nonce, first_nonce + 20))
    assert w3.eth.get_transaction_count(client.address) == first_nonce + 20
    for recipient in recipients:
        assert client.token_balance(recipient) == balances[recipient] + ONE_TOKEN
        assert client.allowance(client.address, recipient) == ONE_TOKEN


# ------------------------------------------------------------------------------------ node failures


def test_a_node_that_goes_away_raises_chain_unavailable_everywhere(artifacts, deployer):
    with Anvil() as node:  # a chain of its own, to stop under a connected client
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        client = MarketClient.connect(node.url, deployment, private_key=deployer.key)
        client.approve(1)  # the client works while the node is up
        pages = client.iter_events(page_size=1)  # to_block is the head now: three one-block pages
        assert next(pages).name == "OwnershipTransferred"  # block 2: the market's constructor
        events_later = client.iter_events(to_block=client.block_number())  # nothing read yet
        node.stop()

        attempts = {
            "a view": client.task_count,
            "a transaction": lambda: client.approve(2),
            "the next page of an iteration": lambda: next(pages),
            "an iteration made before": lambda: list(events_later),
            "a new iteration": lambda: list(client.iter_events()),
            "the block number": client.block_number,
            "the chain time": client.chain_time,
            "another account's client": lambda: client.with_account(None),
            "a deployment": lambda: deploy_market(
                w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"]
            ),
        }
        for what, attempt in attempts.items():
            with pytest.raises(ChainUnavailableError) as caught:
                attempt()
            assert caught.value.endpoint == node.url, what
            assert "is the node running?" in str(caught.value), what

        try:  # what callers write: one except for anything chain access raises
            client.task_count()
        except ChainError as exc:
            caught_as_chain_error = exc
        assert isinstance(caught_as_chain_error, ChainUnavailableError)
        assert caught_as_chain_error.doing == "reading taskCount"


class Recorder:
    """A ChainObserver that writes down every span, how it ended, and every mined transaction."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.failed: list[tuple[str, type]] = []
        self.mined: list[tuple[str, TxResult, float]] = []
        self.depth = self.max_depth = 0

    @contextmanager
    def span(self, kind, name):
        self.spans.append((kind, name))
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        try:
            yield
        except BaseException as exc:
            self.failed.append((name, type(exc)))
            raise
        finally:
            self.depth -= 1

    def transaction_mined(self, name, result, seconds):
        self.mined.append((name, result, seconds))


def test_the_observer_sees_every_transaction_with_its_name_and_gas(
    chain, deployment, owner, coordinator, trainers
):
    recorder = Recorder()
    client = MarketClient(chain, deployment, owner, observer=recorder)
    assert recorder.spans == [("read", "eth_chainId"), ("read", "eth_getCode")]  # the constructor's checks
    task_id = client.create_task(make_terms(coordinator.address)).task_id
    trainer = client.with_account(trainers[0])  # the observer goes along
    trainer.join(task_id)
    with pytest.raises(ContractRevert):
        trainer.join(task_id, auto_approve=False)  # estimated, refused, never sent

    names = ["approve", "createTask", "approve", "join"]
    assert [name for name, _, _ in recorder.mined] == names
    for name, result, seconds in recorder.mined:
        receipt = chain.eth.get_transaction_receipt(result.tx_hash)
        assert result.gas_used == receipt["gasUsed"] > 21_000, name
        assert seconds > 0
    assert [name for kind, name in recorder.spans if kind == "transaction"] == [*names, "join"]
    assert recorder.failed == [("join", ContractRevert)]
    assert ("read", "allowance") in recorder.spans and ("read", "getTask") in recorder.spans
    assert recorder.max_depth == 1  # spans never nest

    del recorder.spans[:]
    head = client.block_number()
    events = list(client.iter_events(from_block=head - 2, to_block=head, page_size=1))
    assert [e.name for e in events] == ["TaskCreated", "TrainerJoined"]  # blocks: createTask, approve, join
    assert recorder.spans == [("read", "eth_blockNumber")] + [("read", "eth_getLogs")] * 3

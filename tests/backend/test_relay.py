"""The relay's edges, as the audit saw them: a create-task deadline equal to the latest block
passed the checks, reverted when mined, cost the coordinator gas and came back as 503
"ChainUnavailable ... reverted without a reason"; and any task naming this coordinator got an
orchestrator thread whose transactions it paid for."""

from __future__ import annotations

from backend.db import TaskRow
from backend.services import Supervisor
from fedmarket.chain import SignedTask
from fedmarket.client import task_request_body
from fedmarket.errors import ContractRevert
from testkit.coordinator import digits_spec, files_under, task_terms


def assert_refused(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.json()


def create_body(coordinator, spec, terms, *, signer, deadline: int) -> dict:
    """The JSON of POST /v1/tasks signed by `signer`, signature and permit valid until `deadline`."""
    market = coordinator.market.with_account(signer)
    signature = market.sign_task_terms(terms, deadline=deadline, nonce=market.nonce_of(signer.address))
    permit = market.sign_permit(terms.reward_pool, deadline=deadline)
    return task_request_body(spec, SignedTask(terms, signer.address, deadline, signature, permit))


def written(coordinator) -> tuple:
    """What a refused post must not change: tasks on chain, blobs, the coordinator's nonce (its gas)."""
    return (
        coordinator.market.task_count(),
        tuple(files_under(coordinator.services.store.root)),
        coordinator_nonce(coordinator),
    )


def coordinator_nonce(coordinator) -> int:
    return coordinator.services.chain.w3.eth.get_transaction_count(coordinator.address)


def test_a_deadline_at_the_latest_block_is_refused_before_anything_is_sent(coordinator_app, owner):
    spec = digits_spec()
    terms = task_terms(spec, coordinator_app.address)
    latest = coordinator_app.market.chain_time()
    body = create_body(coordinator_app, spec, terms, signer=owner, deadline=latest)
    before = written(coordinator_app)
    response = coordinator_app.http.post("/v1/tasks", json=body)
    assert_refused(response, 422, "DeadlineTooSoon")
    assert "60 s" in response.json()["detail"]  # the margin it needs, in words
    assert written(coordinator_app) == before  # nothing sent: no task, no blob, no gas spent

    # A deadline just inside the margin is refused too; one past it goes through.
    body = create_body(coordinator_app, spec, terms, signer=owner, deadline=latest + 59)
    assert_refused(coordinator_app.http.post("/v1/tasks", json=body), 422, "DeadlineTooSoon")
    body = create_body(coordinator_app, spec, terms, signer=owner, deadline=latest + 120)
    assert coordinator_app.http.post("/v1/tasks", json=body).status_code == 201


def next_block_a_second_later(w3, market) -> int:
    """The latest block's time; the next block is mined a second after it, as on a chain with a
    block time (Anvil's instant mining may reuse the same second)."""
    latest = market.chain_time()
    w3.provider.make_request("evm_setNextBlockTimestamp", [latest + 1])
    return latest


def test_a_revert_at_inclusion_is_a_4xx_naming_the_contract_error(start_coordinator, owner, w3):
    coordinator = start_coordinator(relay_deadline_margin=0)  # the old checks: the deadline passes them
    spec = digits_spec()
    terms = task_terms(spec, coordinator.address)
    deadline = next_block_a_second_later(w3, coordinator.market)
    body = create_body(coordinator, spec, terms, signer=owner, deadline=deadline)
    tasks = coordinator.market.task_count()
    response = coordinator.http.post("/v1/tasks", json=body)
    assert_refused(response, 422, "TaskMarketSignatureExpired")  # was 503 "reverted without a reason"
    assert coordinator.market.task_count() == tasks


def test_a_mined_revert_is_decoded_to_its_custom_error(coordinator_app, owner, w3):
    """The SDK under the relay: a transaction that passed its checks and reverts once mined (sent
    with its gas given, so no estimate stops it first) names the contract's error, not "reverted
    without a reason"."""
    market = coordinator_app.market.with_account(owner)
    terms = task_terms(digits_spec(), coordinator_app.address)
    signed = market.sign_create_task(terms, deadline=market.chain_time())
    chain = coordinator_app.services.chain
    relay = chain._create_task_for_fn(**signed.as_kwargs())
    next_block_a_second_later(w3, market)
    assert chain._sender is not None
    try:
        chain._sender.transact(relay, gas=3_000_000)
    except ContractRevert as revert:
        assert revert.name == "TaskMarketSignatureExpired", revert
    else:
        raise AssertionError("a deadline at the latest block must not survive inclusion")


def tasks_orchestrated(coordinator) -> list[int]:
    supervisor = Supervisor(coordinator.services)
    try:
        return supervisor.dispatch_once()
    finally:
        supervisor.stop()


def test_only_tasks_posted_through_this_coordinator_are_orchestrated(coordinator_app, post_task, owner):
    relayed = post_task(coordinator_app)
    direct = coordinator_app.market.with_account(owner).create_task(
        task_terms(digits_spec(), coordinator_app.address)
    )
    coordinator_app.sync()
    assert tasks_orchestrated(coordinator_app) == [relayed.task_id]
    with coordinator_app.services.db.session() as session:
        assert coordinator_app.services.orchestrates(session.get(TaskRow, direct.task_id)) is False
    info = coordinator_app.http.get("/v1/info").json()
    assert info["owner_allowlist"] == [] and "posted through its POST /v1/tasks" in info["orchestrates"]


def test_an_allowlisted_owners_tasks_are_orchestrated_wherever_they_were_posted(
    start_coordinator, owner, outsider
):
    coordinator = start_coordinator(owner_allowlist=[owner.address.lower()])
    terms = task_terms(digits_spec(), coordinator.address)
    mine = coordinator.market.with_account(owner).create_task(terms)
    theirs = coordinator.market.with_account(outsider).create_task(terms)
    coordinator.sync()
    assert tasks_orchestrated(coordinator) == [mine.task_id]
    assert theirs.task_id != mine.task_id
    info = coordinator.http.get("/v1/info").json()
    assert info["owner_allowlist"] == [owner.address] and "owner_allowlist" in info["orchestrates"]

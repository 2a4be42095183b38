"""Typed client of the deployed TaskMarket and its token: one method per contract function.

:class:`MarketClient` is what the coordinator and the trainer node use to talk to the chain::

    client = MarketClient.connect("http://127.0.0.1:8545", "deployments/local.json", private_key=key)
    created = client.create_task(terms)          # approves the pool first, waits for the receipt
    client.task(created.task_id).status          # TaskStatus.OPEN
    for event in client.iter_events("Committed", task_id=created.task_id):
        ...

Decisions worth knowing:

- **Every write waits for its receipt** and returns a :class:`TxResult` (hash, block, gas used
  and the events *the called contract* emitted, decoded). ``create_task``/``create_task_for``
  return a :class:`CreateTaskResult` that also carries the new ``task_id``.
- **Every failure is a ChainError**, and nothing else leaves the client for chain access:

  - reverts are named: every path (gas estimate, eth_call of a view, a dry run, a transaction
    that was mined and failed) raises ``ContractRevert("TaskMarketWrongPhase", {"taskId": 1,
    "phase": 2})``, decoded from both ABIs (market and token, so ``ERC20InsufficientAllowance``
    and ``EnforcedPause`` are named too) by :mod:`fedmarket.abi`;
  - a node that refuses a transaction, or a receipt that never comes, raises
    :class:`~fedmarket.errors.TransactionFailed`;
  - a node that cannot be reached, times out or answers with an RPC error raises
    :class:`~fedmarket.errors.ChainUnavailableError` (from connecting, every view, every
    transaction, every page of events). One boundary, :func:`map_transport_errors`, makes that
    true: every request to the node runs inside it, and web3's or requests' own errors never get out.
- **Nonces**: a client owns one :class:`~fedmarket.transactions.TransactionSender`, which hands
  out nonces under a lock, so one client may be shared by many threads. Use one client (or
  :meth:`MarketClient.with_account` once) per account per process: two senders for one account
  would race for the same nonces.
- **Approvals**: ``create_task`` and ``join`` call :meth:`MarketClient.ensure_allowance` first
  (``auto_approve=False`` turns that off), because the contract pulls tokens with
  ``transferFrom``. ``ensure_allowance`` sends nothing when the allowance already suffices.
- **Values**: hashes are ``bytes`` (hex strings are accepted as input), addresses checksummed
  strings, amounts ``int`` base units, phases and statuses the IntEnums of
  :mod:`fedmarket.protocol`. Event and error arguments keep the Solidity names (``taskId``).
- **Events** are read page by page with ``eth_getLogs`` (:meth:`MarketClient.iter_events`) in
  chain order. Reorgs are not handled here: an indexer on a chain that reorganises should stay a
  few blocks behind the head (``to_block``).
- **Read-only clients** (no key) may call every view; every write raises ``ChainError``.
- **Observers** see every request without subclassing: pass ``observer=`` (a :class:`ChainObserver`)
  to the constructor, :meth:`MarketClient.connect` or :meth:`MarketClient.with_account`. Its
  ``span(kind, name)`` wraps each transaction (``"transaction"``, named by contract function: build,
  gas estimate, sign, send, receipt) and each read (``"read"``: views by contract function, node
  queries by JSON-RPC method, one span per ``eth_getLogs`` page); ``transaction_mined(name, result,
  seconds)`` follows each successful one with its gas. Spans never nest, and a span that fails sees
  the ``ChainError`` that ends it. ``bench/protocol_overhead.py`` times the protocol this way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.types import FilterParams

from fedmarket import protocol
from fedmarket.abi import REVERT_EXCEPTIONS, ChainEvent, EventDecoder
from fedmarket.deploy import Deployment
from fedmarket.errors import ChainError, ChainUnavailableError, TransactionFailed
from fedmarket.protocol import PermitSignature, RoundPhase, TaskStatus, TaskTerms
from fedmarket.transactions import TransactionSender, map_transport_errors

__all__ = [
    "DEFAULT_SIGNATURE_TTL",
    "ChainEvent",
    "ChainObserver",
    "CommitmentInfo",
    "CreateTaskResult",
    "EventDecoder",
    "MarketClient",
    "RoundInfo",
    "SignedTask",
    "TaskInfo",
    "TrainerInfo",
    "TxResult",
    "map_transport_errors",
]

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE_TTL = 3600  # seconds a task-terms signature or permit stays valid by default
DEFAULT_PAGE_SIZE = 2000  # blocks per eth_getLogs request; many public RPCs cap ranges near this
READ_ONLY_MESSAGE = (
    "read-only client: pass a private key (MarketClient.connect(..., private_key=...)) to send transactions"
)


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the events the called contract emitted in it."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[ChainEvent] = field(default_factory=list)

    def event(self, name: str) -> ChainEvent:
        """The first event called `name`; KeyError naming the events present when there is none."""
        for event in self.events:
            if event.name == name:
                return event
        raise KeyError(f"no {name} event in {self.tx_hash} (events: {[e.name for e in self.events]})")


@dataclass(frozen=True)
class CreateTaskResult(TxResult):
    """A task-creating transaction; ``task_id`` comes from its ``TaskCreated`` event."""

    task_id: int = field(kw_only=True)


@dataclass(frozen=True)
class TaskInfo:
    """`getTask`: the task's terms and state."""

    task_id: int
    terms: TaskTerms
    owner: str
    status: TaskStatus
    current_round: int  # rounds started so far (1-based); 0 before the first
    trainer_count: int
    validator_count: int
    pool: int  # reward tokens not yet allocated
    unclaimed: int  # allocated to trainers and validators, not yet claimed
    model_hash: bytes  # the global model the next round trains on

    @property
    def rounds_left(self) -> int:
        """Rounds not started yet."""
        return self.terms.rounds - self.current_round


@dataclass(frozen=True)
class RoundInfo:
    """`getRound`: one round of a task (all zero for a round that was never started)."""

    task_id: int
    round_no: int
    commit_deadline: int
    reveal_deadline: int
    score_commit_deadline: int
    score_reveal_deadline: int
    commit_count: int
    reveal_count: int
    score_commit_count: int
    score_reveal_count: int
    closed: bool
    aborted: bool
    model_published: bool
    closed_at: int
    payout: int  # tokens paid in this round, trainers and validators
    model_hash: bytes  # the global model trained on in this round
    new_model_hash: bytes  # the aggregate of its accepted updates, once published
    report_hash: bytes


@dataclass(frozen=True)
class TrainerInfo:
    """`getTrainer`: a trainer's stake and progress in one task."""

    stake: int
    claimable: int  # earned, not yet claimed
    last_commit_round: int
    last_reveal_round: int
    joined: bool


@dataclass(frozen=True)
class ValidatorInfo:
    """`getValidator`: a validator's stake, progress and committed data in one task."""

    stake: int
    claimable: int
    last_score_commit_round: int
    last_score_reveal_round: int
    joined: bool
    data_hash: bytes


@dataclass(frozen=True)
class Settlement:
    """`ITaskMarket.Settlement`: a round's revealed inputs, as `finalizeRound` takes them."""

    trainers: tuple[str, ...]  # every revealer, ascending
    non_revealers: tuple[str, ...]
    validators: tuple[str, ...]  # every score revealer, ascending
    scores: tuple[tuple[int, ...], ...]
    silent_validators: tuple[str, ...]

    def as_tuple(self) -> tuple:
        return (
            _addresses(self.trainers), _addresses(self.non_revealers), _addresses(self.validators),
            [list(vector) for vector in self.scores], _addresses(self.silent_validators),
        )  # fmt: skip


@dataclass(frozen=True)
class CommitmentInfo:
    """`getCommitment`: the trainer's latest commitment (round 0 and zero hash before any)."""

    round_no: int
    commitment: bytes
    revealed: bool


@dataclass(frozen=True)
class SignedTask:
    """A task signed by its owner for a relayer: the arguments of `createTaskFor`."""

    terms: TaskTerms
    owner: str
    deadline: int
    owner_signature: bytes
    permit: PermitSignature

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`MarketClient.create_task_for` (and its dry run)."""
        return {
            "terms": self.terms,
            "owner": self.owner,
            "deadline": self.deadline,
            "owner_signature": self.owner_signature,
            "permit": self.permit,
        }


# ------------------------------------------------------------------------------------ observer


SpanKind = Literal["transaction", "read"]


class ChainObserver(Protocol):
    """Sees every request a :class:`MarketClient` makes of the node: for timing, metrics, tracing.

    A hook instead of subclassing the client, so the client's plumbing can change without
    breaking whoever measures it.
    """

    def span(self, kind: SpanKind, name: str) -> AbstractContextManager[None]:
        """Wraps one transaction (build, gas estimate, sign, send, receipt) or one read (a view's
        eth_call, one eth_getLogs page, a block query). `name` is the contract function
        (``commit``, ``getTask``) or, for node queries, the JSON-RPC method (``eth_getLogs``)."""
        ...

    def transaction_mined(self, name: str, result: TxResult, seconds: float) -> None:
        """Called after each successful transaction; `seconds` from building it to its receipt."""
        ...


# ------------------------------------------------------------------------------------ helpers


def _bytes32(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            raise ValueError(f"{what} must be 32 bytes or their hex, got {value!r}") from None
    value = bytes(value)
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
    return value


def _account(key_or_account: LocalAccount | str | bytes) -> LocalAccount:
    if isinstance(key_or_account, LocalAccount):
        return key_or_account
    return Account.from_key(key_or_account)


def _addresses(accounts: Iterable[str]) -> list[str]:
    return [to_checksum_address(a) for a in accounts]


# ------------------------------------------------------------------------------------ client


class MarketClient:
    """Typed access to one deployment of the market: writes, views, signatures and events.

    `account` signs transactions locally (the key never leaves the process); without it the
    client is read-only. The constructor checks that `w3` is on the deployment's chain and that
    the market has code there, so a wrong RPC or a reset devnet fails at once, clearly.
    """

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        account: LocalAccount | None = None,
        *,
        receipt_timeout: float = 120.0,
        observer: ChainObserver | None = None,
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.account = account
        self.observer = observer
        self.market_address = to_checksum_address(deployment.market)
        self.token_address = to_checksum_address(deployment.token)
        self._receipt_timeout = receipt_timeout
        self._check_chain()
        self.market = deployment.market_contract(w3)
        self.token = deployment.token_contract(w3)
        self.decoder = deployment.revert_decoder()
        self.market_events = EventDecoder(deployment.market_abi, self.market_address)
        self.token_events = EventDecoder(deployment.token_abi, self.token_address)
        self._sender: TransactionSender | None = None
        if account is not None:
            self._sender = TransactionSender(
                w3, account, decoder=self.decoder, receipt_timeout=receipt_timeout
            )
        self._token_name: str | None = None

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        deployment: str | Path | Deployment,
        private_key: str | bytes | None = None,
        *,
        request_timeout: float = 30.0,
        receipt_timeout: float = 120.0,
        observer: ChainObserver | None = None,
    ) -> MarketClient:
        """A client over HTTP JSON-RPC for the deployment in `deployment` (a deployments file or
        a loaded :class:`Deployment`); with `private_key`, a client that can send transactions.
        ChainUnavailableError when nothing answers at `rpc_url`."""
        if not isinstance(deployment, Deployment):
            deployment = Deployment.load(deployment)
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))
        account = Account.from_key(private_key) if private_key is not None else None
        return cls(w3, deployment, account, receipt_timeout=receipt_timeout, observer=observer)

    def with_account(self, account: LocalAccount | str | bytes | None) -> MarketClient:
        """A client for another account (or read-only with None) on the same connection and observer."""
        account = _account(account) if account is not None else None
        return MarketClient(
            self.w3, self.deployment, account, receipt_timeout=self._receipt_timeout, observer=self.observer
        )

    def _check_chain(self) -> None:
        where = getattr(self.w3.provider, "endpoint_uri", None) or "the RPC"
        with self._node("read", "eth_chainId"):
            chain_id = self.w3.eth.chain_id
        with self._node("read", "eth_getCode"):
            code = self.w3.eth.get_code(self.market_address)
        if chain_id != self.deployment.chain_id:
            raise ChainError(
                f"{where} is chain {chain_id}, but deployment {self.deployment.network!r} is on chain "
                f"{self.deployment.chain_id}: point the client at the right RPC or deployments file"
            )
        if not code:
            raise ChainError(
                f"no contract at market address {self.market_address} on chain {chain_id} ({where}): "
                "the devnet was probably restarted since the deployment; deploy again"
            )

    @property
    def address(self) -> str | None:
        """The signing account's address; None for a read-only client."""
        return self.account.address if self.account else None

    @property
    def read_only(self) -> bool:
        return self.account is None

    # -------------------------------------------------------------------- plumbing

    @property
    def signer(self) -> str:
        """The signing account's address; ChainError for a read-only client."""
        return self._require_account().address

    def _require_account(self) -> LocalAccount:
        if self.account is None:
            raise ChainError(READ_ONLY_MESSAGE)
        return self.account

    @contextmanager
    def _node(self, kind: SpanKind, name: str) -> Iterator[None]:
        """Every request to the node runs in here: the observer's span around the transport boundary,
        so the observer sees the ChainError a failed request ends with."""
        span = self.observer.span(kind, name) if self.observer is not None else nullcontext()
        doing = f"sending {name} from {self.address}" if kind == "transaction" else f"reading {name}"
        with span, map_transport_errors(self.w3, doing):
            yield

    def _call(self, fn, block: int | str = "latest"):
        """eth_call of a view or a dry run; reverts come back as named ContractRevert."""
        params = {"from": self.address} if self.address else {}
        with self._node("read", fn.fn_name):
            try:
                return fn.call(params, block_identifier=block)
            except REVERT_EXCEPTIONS as exc:
                raise self.decoder.from_exception(exc) from None

    def _transact(self, fn, events: EventDecoder) -> TxResult:
        self._require_account()
        assert self._sender is not None
        started = time.perf_counter()
        try:
            with self._node("transaction", fn.fn_name):
                receipt = self._sender.transact(fn)
        except (TransactionFailed, ChainUnavailableError) as exc:
            if "insufficient funds" in str(exc).lower():  # outside the span: spans never nest
                raise self._no_gas(fn.fn_name) from exc
            raise
        seconds = time.perf_counter() - started
        decoded = [e for e in (events.decode(entry) for entry in receipt["logs"]) if e is not None]
        result = TxResult(
            tx_hash=Web3.to_hex(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=decoded,
        )
        if self.observer is not None:
            self.observer.transaction_mined(fn.fn_name, result, seconds)
        return result

    def _no_gas(self, name: str) -> TransactionFailed:
        """The node's "insufficient funds for gas * price + value", said as what it means: the one
        place that maps it (nodes word it differently; every write comes through `_transact`)."""
        address = self.signer
        with self._node("read", "eth_getBalance"):
            balance = self.w3.eth.get_balance(to_checksum_address(address))
        if balance == 0:
            return TransactionFailed(
                f"account {address} has no ETH for gas: {name} was not sent; send it ETH first "
                "(on the devnet, from any dev account)"
            )
        return TransactionFailed(
            f"account {address} has {Web3.from_wei(balance, 'ether')} ETH, not enough for the gas of {name}; "
            "send the account more ETH"
        )

    def _market_tx(self, fn) -> TxResult:
        return self._transact(fn, self.market_events)

    def _created(self, result: TxResult) -> CreateTaskResult:
        task_id = result.event("TaskCreated").args["taskId"]
        return CreateTaskResult(
            result.tx_hash, result.block_number, result.gas_used, result.events, task_id=task_id
        )

    def _create_task_for_fn(self, terms, owner, deadline, owner_signature, permit):
        return self.market.functions.createTaskFor(
            terms.as_tuple(),
            to_checksum_address(owner),
            int(deadline),
            bytes(owner_signature),
            permit.as_tuple(),
        )

    # -------------------------------------------------------------------- tasks

    def create_task(self, terms: TaskTerms, *, auto_approve: bool = True) -> CreateTaskResult:
        """`createTask`: posts a task funded by this account (approving `reward_pool` first
        unless `auto_approve=False`). Emits TaskCreated; the result carries the task id."""
        self._require_account()
        if auto_approve:
            self.ensure_allowance(terms.reward_pool)
        return self._created(self._market_tx(self.market.functions.createTask(terms.as_tuple())))

    def create_task_for(
        self,
        terms: TaskTerms,
        owner: str,
        deadline: int,
        owner_signature: bytes,
        permit: PermitSignature,
    ) -> CreateTaskResult:
        """`createTaskFor`: relays a task signed by `owner` (see :meth:`sign_task_terms` and
        :meth:`sign_permit`); this account pays the gas, the owner's permit funds the pool."""
        fn = self._create_task_for_fn(terms, owner, deadline, owner_signature, permit)
        return self._created(self._market_tx(fn))

    def simulate_create_task_for(
        self,
        terms: TaskTerms,
        owner: str,
        deadline: int,
        owner_signature: bytes,
        permit: PermitSignature,
    ) -> int:
        """Dry run of :meth:`create_task_for` (eth_call, nothing is sent, works read-only): the
        task id it would create, or ContractRevert naming why it would fail. A relayer checks
        this before paying gas."""
        return self._call(self._create_task_for_fn(terms, owner, deadline, owner_signature, permit))

    def cancel_task(self, task_id: int) -> TxResult:
        """`cancelTask`: the owner cancels before the first round; emits TaskCancelled (refund)."""
        return self._market_tx(self.market.functions.cancelTask(task_id))

    def expire_task(self, task_id: int) -> TxResult:
        """`expireTask`: anyone ends a task whose next round was not started within the grace
        period; the pool goes back to the owner; emits TaskExpired (refund)."""
        return self._market_tx(self.market.functions.expireTask(task_id))

    # -------------------------------------------------------------------- trainers

    def join(self, task_id: int, *, auto_approve: bool = True) -> TxResult:
        """`join`: stakes the task's `min_stake` (approving it first unless `auto_approve=False`)."""
        self._require_account()
        if auto_approve:
            self.ensure_allowance(self.task(task_id).terms.min_stake)
        return self._market_tx(self.market.functions.join(task_id))

    def leave(self, task_id: int) -> TxResult:
        """`leave`: takes the whole stake back; not while a commitment is open."""
        return self._market_tx(self.market.functions.leave(task_id))

    def withdraw_stake(self, task_id: int) -> TxResult:
        """`withdrawStake`: the stake left after a rejection, or after the task ended."""
        return self._market_tx(self.market.functions.withdrawStake(task_id))

    # -------------------------------------------------------------------- rounds

    def start_round(self, task_id: int, model_hash: bytes | str) -> TxResult:
        """`startRound` (coordinator): opens the next round's commit phase on `model_hash`."""
        return self._market_tx(self.market.functions.startRound(task_id, _bytes32(model_hash, "model_hash")))

    def commit(self, task_id: int, commitment: bytes | str) -> TxResult:
        """`commit`: `commitment` from :func:`fedmarket.protocol.make_commitment`."""
        return self._market_tx(self.market.functions.commit(task_id, _bytes32(commitment, "commitment")))

    def reveal(self, task_id: int, update_hash: bytes | str, salt: bytes | str) -> TxResult:
        """`reveal`: the update hash and salt committed to in the current round."""
        return self._market_tx(
            self.market.functions.reveal(
                task_id, _bytes32(update_hash, "update_hash"), _bytes32(salt, "salt")
            )
        )

    def finalize_round(self, task_id: int, settlement: Settlement) -> TxResult:
        """`finalizeRound` (anyone, both quorums reached): the contract computes the consensus
        from `settlement` (see :func:`fedmarket.ledger.read_round`), pays and slashes. Emits
        TrainerSettled*, ValidatorSettled*, the slash events, RoundFinalized, maybe TaskCompleted."""
        return self._market_tx(self.market.functions.finalizeRound(task_id, settlement.as_tuple()))

    def abort_round(
        self, task_id: int, non_revealers: Sequence[str] = (), silent_validators: Sequence[str] = ()
    ) -> TxResult:
        """`abortRound` (anyone, when a quorum was missed): closes the round, slashing exactly the
        committers and score committers that did not reveal. Emits the slash events, RoundAborted."""
        fn = self.market.functions.abortRound(
            task_id, _addresses(non_revealers), _addresses(silent_validators)
        )
        return self._market_tx(fn)

    def publish_model(self, task_id: int, model_hash: bytes | str, report_hash: bytes | str) -> TxResult:
        """`publishModel` (coordinator): the aggregate of the last finalized round's accepted updates."""
        fn = self.market.functions.publishModel(
            task_id, _bytes32(model_hash, "model_hash"), _bytes32(report_hash, "report_hash")
        )
        return self._market_tx(fn)

    # -------------------------------------------------------------------- validators

    def join_as_validator(
        self, task_id: int, data_hash: bytes | str, stake: int | None = None, *, auto_approve: bool = True
    ) -> TxResult:
        """`joinAsValidator`: stakes `stake` (default: the task's `min_validator_stake`) to score
        on the data whose sha256 is `data_hash`, fixed for good."""
        self._require_account()
        if stake is None:
            stake = self.task(task_id).terms.min_validator_stake
        if auto_approve:
            self.ensure_allowance(stake)
        fn = self.market.functions.joinAsValidator(task_id, _bytes32(data_hash, "data_hash"), int(stake))
        return self._market_tx(fn)

    def leave_validator(self, task_id: int) -> TxResult:
        """`leaveValidator`: takes the whole validator stake back; not while a score commitment is open."""
        return self._market_tx(self.market.functions.leaveValidator(task_id))

    def commit_scores(self, task_id: int, commitment: bytes | str) -> TxResult:
        """`commitScores`: `commitment` from :func:`fedmarket.protocol.make_score_commitment`."""
        return self._market_tx(
            self.market.functions.commitScores(task_id, _bytes32(commitment, "commitment"))
        )

    def reveal_scores(self, task_id: int, scores: Sequence[int], salt: bytes | str) -> TxResult:
        """`revealScores`: the vector committed to, one entry per revealer in ascending order."""
        fn = self.market.functions.revealScores(task_id, [int(e) for e in scores], _bytes32(salt, "salt"))
        return self._market_tx(fn)

    # -------------------------------------------------------------------- rewards and admin

    def claim(self, task_id: int) -> TxResult:
        """`claim`: pays everything this account earned in the task, as trainer and as validator."""
        return self._market_tx(self.market.functions.claim(task_id))

    def pause(self) -> TxResult:
        """`pause` (market admin): stops new tasks, joins and round progress; exits stay open."""
        return self._market_tx(self.market.functions.pause())

    def unpause(self) -> TxResult:
        """`unpause` (market admin)."""
        return self._market_tx(self.market.functions.unpause())

    # -------------------------------------------------------------------- token

    def approve(self, amount: int, spender: str | None = None) -> TxResult:
        """ERC-20 `approve` of `amount` to `spender` (default: the market). Sets, does not add."""
        spender = to_checksum_address(spender or self.market_address)
        return self._transact(self.token.functions.approve(spender, int(amount)), self.token_events)

    def ensure_allowance(self, amount: int, spender: str | None = None) -> TxResult | None:
        """Approves `amount` only if the current allowance is below it; None when nothing was sent."""
        account = self._require_account()
        if self.allowance(account.address, spender) >= amount:
            return None
        return self.approve(amount, spender)

    def allowance(self, owner: str | None = None, spender: str | None = None) -> int:
        """Tokens `spender` (default: the market) may pull from `owner` (default: this account)."""
        owner = owner or self._require_account().address
        spender = spender or self.market_address
        fn = self.token.functions.allowance(to_checksum_address(owner), to_checksum_address(spender))
        return self._call(fn)

    def token_balance(self, address: str | None = None) -> int:
        """Token balance (base units) of `address`, by default this account."""
        address = address or self._require_account().address
        return self._call(self.token.functions.balanceOf(to_checksum_address(address)))

    def transfer(self, to: str, amount: int) -> TxResult:
        """ERC-20 `transfer` from this account."""
        fn = self.token.functions.transfer(to_checksum_address(to), int(amount))
        return self._transact(fn, self.token_events)

    def token_name(self) -> str:
        """The token's name (its EIP-712 permit domain name); read once and cached."""
        if self._token_name is None:
            self._token_name = self._call(self.token.functions.name())
        return self._token_name

    def permit_nonce(self, owner: str | None = None) -> int:
        """The token's EIP-2612 nonce of `owner` (default: this account)."""
        owner = owner or self._require_account().address
        return self._call(self.token.functions.nonces(to_checksum_address(owner)))

    # -------------------------------------------------------------------- views

    def task(self, task_id: int) -> TaskInfo:
        """`getTask`; ContractRevert TaskMarketUnknownTask for an id never created."""
        terms, state = self._call(self.market.functions.getTask(task_id))
        owner, status, current_round, trainer_count, validator_count, pool, unclaimed, model_hash = state
        return TaskInfo(
            task_id=task_id,
            terms=TaskTerms(bytes(terms[0]), to_checksum_address(terms[1]), *terms[2:]),
            owner=to_checksum_address(owner),
            status=TaskStatus(status),
            current_round=current_round,
            trainer_count=trainer_count,
            validator_count=validator_count,
            pool=pool,
            unclaimed=unclaimed,
            model_hash=bytes(model_hash),
        )

    def round(self, task_id: int, round_no: int | None = None, *, block: int | str = "latest") -> RoundInfo:
        """`getRound` of `round_no` (default: the task's current round), at `block`."""
        if round_no is None:
            round_no = self.task(task_id).current_round
        values = list(self._call(self.market.functions.getRound(task_id, round_no), block))
        # The struct's last three fields are bytes32: modelHash, newModelHash, reportHash.
        values[-3:] = [bytes(v) for v in values[-3:]]
        return RoundInfo(task_id, round_no, *values)

    def phase(self, task_id: int) -> RoundPhase:
        """`roundPhase`: the current round's phase, by the chain's clock."""
        return RoundPhase(self._call(self.market.functions.roundPhase(task_id)))

    def trainer(
        self, task_id: int, address: str | None = None, *, block: int | str = "latest"
    ) -> TrainerInfo:
        """`getTrainer` of `address` (default: this account), at `block`."""
        address = address or self._require_account().address
        fn = self.market.functions.getTrainer(task_id, to_checksum_address(address))
        return TrainerInfo(*self._call(fn, block))

    def commitment(self, task_id: int, address: str | None = None) -> CommitmentInfo:
        """`getCommitment` of `address` (default: this account)."""
        address = address or self._require_account().address
        round_no, commitment, revealed = self._call(
            self.market.functions.getCommitment(task_id, to_checksum_address(address))
        )
        return CommitmentInfo(round_no, bytes(commitment), revealed)

    def validator(
        self, task_id: int, address: str | None = None, *, block: int | str = "latest"
    ) -> ValidatorInfo:
        """`getValidator` of `address` (default: this account), at `block`."""
        address = address or self._require_account().address
        fn = self.market.functions.getValidator(task_id, to_checksum_address(address))
        values = list(self._call(fn, block))
        values[-1] = bytes(values[-1])
        return ValidatorInfo(*values)

    def score_commitment(self, task_id: int, address: str | None = None) -> CommitmentInfo:
        """`getScoreCommitment` of `address` (default: this account); once revealed, the commitment
        is `keccak256(abi.encode(scores))`."""
        address = address or self._require_account().address
        round_no, commitment, revealed = self._call(
            self.market.functions.getScoreCommitment(task_id, to_checksum_address(address))
        )
        return CommitmentInfo(round_no, bytes(commitment), revealed)

    def claimable(self, task_id: int, address: str | None = None) -> int:
        """What `address` (default: this account) can claim now, as trainer and as validator."""
        address = address or self._require_account().address
        return self.trainer(task_id, address).claimable + self.validator(task_id, address).claimable

    def round_budget(self, task_id: int, *, block: int | str = "latest") -> int:
        """`roundBudget`: what the current round may pay out if finalized now; at `block`, what it
        could have then (a settled round's budget is the one at the block before its settlement)."""
        return self._call(self.market.functions.roundBudget(task_id), block)

    def task_count(self) -> int:
        """`taskCount`: tasks ever created; ids run from 1 to this."""
        return self._call(self.market.functions.taskCount())

    def nonce_of(self, owner: str | None = None) -> int:
        """`nonces`: the market EIP-712 nonce the owner's next task-terms signature must carry."""
        owner = owner or self._require_account().address
        return self._call(self.market.functions.nonces(to_checksum_address(owner)))

    def settlement_grace(self) -> int:
        """`settlementGrace`: seconds after a round closed before anyone may expire the task."""
        return self._call(self.market.functions.settlementGrace())

    def hash_task_terms(self, terms: TaskTerms, *, owner: str, nonce: int, deadline: int) -> bytes:
        """`hashTaskTerms`: the EIP-712 digest the owner signs, as the contract computes it."""
        owner = to_checksum_address(owner)
        fn = self.market.functions.hashTaskTerms(terms.as_tuple(), owner, int(nonce), int(deadline))
        return bytes(self._call(fn))

    def token_of_market(self) -> str:
        """`token`: the reward token the market holds (the deployment's token)."""
        return to_checksum_address(self._call(self.market.functions.token()))

    def paused(self) -> bool:
        """Whether the market is paused (no new tasks, joins or round progress)."""
        return self._call(self.market.functions.paused())

    def admin(self) -> str:
        """The account allowed to pause and unpause the market (its Ownable owner)."""
        return to_checksum_address(self._call(self.market.functions.owner()))

    def chain_time(self) -> int:
        """Timestamp of the latest block: the clock every deadline is compared with."""
        with self._node("read", "eth_getBlockByNumber"):
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def block_number(self) -> int:
        """The head's block number."""
        with self._node("read", "eth_blockNumber"):
            return int(self.w3.eth.block_number)

    # -------------------------------------------------------------------- signatures

    def sign_task_terms(self, terms: TaskTerms, *, deadline: int, nonce: int | None = None) -> bytes:
        """This account's EIP-712 signature, as task owner, over `terms` for :meth:`create_task_for`.
        `nonce` defaults to the market's current nonce of this account (:meth:`nonce_of`)."""
        account = self._require_account()
        if nonce is None:
            nonce = self.nonce_of(account.address)
        return protocol.sign_task_terms(
            account.key, terms, nonce=nonce, deadline=int(deadline),
            chain_id=self.deployment.chain_id, market=self.market_address,
        )  # fmt: skip

    def sign_permit(
        self, value: int, *, deadline: int, nonce: int | None = None, spender: str | None = None
    ) -> PermitSignature:
        """An EIP-2612 permit letting `spender` (default: the market) pull `value` tokens from
        this account; `nonce` defaults to the token's current nonce (:meth:`permit_nonce`)."""
        account = self._require_account()
        if nonce is None:
            nonce = self.permit_nonce(account.address)
        return protocol.sign_permit(
            account.key,
            token_name=self.token_name(),
            token=self.token_address,
            chain_id=self.deployment.chain_id,
            spender=to_checksum_address(spender or self.market_address),
            value=int(value),
            nonce=nonce,
            deadline=int(deadline),
        )

    def sign_create_task(self, terms: TaskTerms, *, deadline: int | None = None) -> SignedTask:
        """Everything a relayer needs to post `terms` for this account: the terms signature and a
        permit for the reward pool, both valid until `deadline` (default: chain time +
        DEFAULT_SIGNATURE_TTL). Relay with ``create_task_for(**signed.as_kwargs())``."""
        account = self._require_account()
        if deadline is None:
            deadline = self.chain_time() + DEFAULT_SIGNATURE_TTL
        return SignedTask(
            terms=terms,
            owner=account.address,
            deadline=deadline,
            owner_signature=self.sign_task_terms(terms, deadline=deadline),
            permit=self.sign_permit(terms.reward_pool, deadline=deadline),
        )

    # -------------------------------------------------------------------- events

    def _event_topics(self, name: str | None, task_id: int | None) -> list:
        if name is not None:
            entry = self.market_events.entry(name)
            topic0: Any = Web3.to_hex(self.market_events.topic(name))
            if task_id is not None and not _first_indexed_is_task_id(entry):
                raise ValueError(f"event {name} has no indexed taskId to filter on")
        elif task_id is not None:
            topic0 = [
                Web3.to_hex(topic) for topic, entry in self.market_events.by_topic.items()
                if _first_indexed_is_task_id(entry)
            ]  # fmt: skip
        else:
            return []
        if task_id is None:
            return [topic0]
        return [topic0, Web3.to_hex(int(task_id).to_bytes(32, "big"))]

    def iter_events(
        self,
        name: str | None = None,
        from_block: int | None = None,
        to_block: int | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        task_id: int | None = None,
    ) -> Iterator[ChainEvent]:
        """The market's events in chain order, read with one eth_getLogs per `page_size` blocks.

        `name` keeps one event type (ValueError if the ABI has no such event); `task_id` keeps
        events whose indexed ``taskId`` is that task (a topic filter: the node does the work).
        `from_block` defaults to the deployment block, `to_block` to the head when iteration
        starts (fixed then, so the iteration ends). Logs whose event is not in the ABI are
        skipped with a warning (an ABI older than the contract). A node that fails while pages
        are read raises ChainUnavailableError from the iteration, after the events already yielded.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        topics = self._event_topics(name, task_id)
        start = self.deployment.deploy_block if from_block is None else int(from_block)
        end = self.block_number() if to_block is None else int(to_block)
        return self._iter_pages(topics, start, end, page_size)

    def _iter_pages(self, topics: list, start: int, end: int, page_size: int) -> Iterator[ChainEvent]:
        while start <= end:
            stop = min(start + page_size - 1, end)
            params: dict[str, Any] = {"address": self.market_address, "fromBlock": start, "toBlock": stop}
            if topics:
                params["topics"] = topics
            # Read and decode a page inside the span, yield outside it: the caller's time is not a read.
            with self._node("read", "eth_getLogs"):
                page = self._decode_page(self.w3.eth.get_logs(cast(FilterParams, params)))
            yield from page
            start = stop + 1

    def _decode_page(self, logs) -> list[ChainEvent]:
        events = []
        for entry in sorted(logs, key=lambda e: (int(e["blockNumber"]), int(e["logIndex"]))):
            event = self.market_events.decode(entry)
            if event is None:
                log.warning(
                    "skipping log %s:%s with topic %s: not an event of the market ABI",
                    Web3.to_hex(entry["transactionHash"]), entry["logIndex"],
                    Web3.to_hex(entry["topics"][0]) if entry["topics"] else None,
                )  # fmt: skip
                continue
            events.append(event)
        return events


def _first_indexed_is_task_id(entry: dict) -> bool:
    indexed = [p for p in entry["inputs"] if p.get("indexed")]
    return bool(indexed) and indexed[0]["name"] == "taskId" and indexed[0]["type"] == "uint256"

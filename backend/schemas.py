"""Request and response bodies of the coordinator's API, as its OpenAPI schema declares them.

Requests: token amounts are integers in base units (JSON numbers or decimal strings, since they
exceed 2**53); hashes and signatures are 0x-hex. Responses: amounts are decimal strings, hashes
lowercase 0x-hex, addresses checksummed, blobs named by CID; most are read straight from the
database's rows (``from_attributes``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from eth_utils import is_address, to_checksum_address
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from backend.db import RoundState, TaskState
from fedmarket.protocol import BPS, PermitSignature, RoundPhase, TaskTerms
from fedmarket.report import SubmissionOutcome

_HEX = re.compile(r"^0x[0-9a-fA-F]*$")
UINT256_MAX = 2**256 - 1  # the contract's integers; a larger value cannot even be encoded


def _amount(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer amount in base units")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise ValueError(
            "must be an integer amount in base units from 0 to 2**256 - 1 (a number or a decimal string)"
        )
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError("must be a 0x-prefixed 20-byte address")
    return to_checksum_address(value)


def _hex_bytes(length: int | None):
    def parse(value: Any) -> bytes:
        if not isinstance(value, str) or not _HEX.match(value) or len(value) % 2:
            raise ValueError("must be 0x-prefixed hex")
        raw = bytes.fromhex(value[2:])
        if length is not None and len(raw) != length:
            raise ValueError(f"must be {length} bytes")
        return raw

    return parse


Amount = Annotated[int, BeforeValidator(_amount)]
Address = Annotated[str, BeforeValidator(_address)]
Bytes32 = Annotated[bytes, BeforeValidator(_hex_bytes(32))]
Signature = Annotated[bytes, BeforeValidator(_hex_bytes(65))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TermsIn(_Strict):
    spec_hash: Bytes32
    coordinator: Address
    rounds: int = Field(ge=1, le=65535)
    min_trainers: int = Field(ge=1, le=65535)
    max_trainers: int = Field(ge=1, le=65535)
    slash_bps: int = Field(ge=0, le=BPS)
    commit_window: int = Field(ge=1, lt=2**32)
    reveal_window: int = Field(ge=1, lt=2**32)
    reward_pool: Amount
    min_stake: Amount
    min_validators: int = Field(ge=1, le=65535)
    max_validators: int = Field(ge=1, le=65535)
    validator_share_bps: int = Field(ge=0, le=BPS)
    score_window: int = Field(ge=1, lt=2**32)
    score_reveal_window: int = Field(ge=1, lt=2**32)
    min_validator_stake: Amount

    def to_terms(self) -> TaskTerms:
        return TaskTerms(**self.model_dump())


class PermitIn(_Strict):
    value: Amount
    deadline: int = Field(ge=0, le=UINT256_MAX)
    v: int = Field(ge=0, le=255)
    r: Bytes32
    s: Bytes32

    def to_permit(self) -> PermitSignature:
        return PermitSignature(self.value, self.deadline, self.v, self.r, self.s)


class CreateTaskRequest(_Strict):
    """A task signed by its owner: the spec, the terms (EIP-712-signed) and the pool's permit."""

    spec: dict[str, Any]
    terms: TermsIn
    owner: Address
    deadline: int = Field(
        ge=0, le=UINT256_MAX, description="unix time after which the owner's signature is void"
    )
    signature: Signature
    permit: PermitIn


# ---------------------------------------------------------------------- responses

# Patterns document the formats; a response that broke one would be a coordinator bug (a 500).
HexHash = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]
HexAddress = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]  # checksummed
Cid = Annotated[str, Field(pattern=r"^bafkrei[a-z2-7]+$")]
DecimalAmount = Annotated[str, Field(pattern=r"^[0-9]+$")]
# Terms are stored as the chain emitted them: amounts below 2**53 stay JSON numbers.
StoredAmount = int | DecimalAmount

PublicModel = TypeVar("PublicModel", bound=BaseModel)
PHASES = [phase.name.lower() for phase in RoundPhase]  # the API's names of RoundPhase


def octet_stream(description: str) -> dict[str, Any]:
    """An OpenAPI request or response body of raw bytes, for the routes that move blobs, not JSON."""
    schema = {"type": "string", "format": "binary"}
    return {"description": description, "content": {"application/octet-stream": {"schema": schema}}}


def from_row(model: type[PublicModel], row: Any, **extra: Any) -> PublicModel:
    """`model` from a row's columns plus the fields no single row holds (joined, computed)."""
    columns = {name: getattr(row, name) for name in model.model_fields if name not in extra}
    return model.model_validate({**columns, **extra})


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    """Every refusal's body (4xx, and 503 when a dependency is down); see ``backend.errors``."""

    error: str = Field(description="the refusal's name, for programs: TaskNotFound, InvalidRequest, ...")
    detail: str = Field(description="what was wrong and what to do about it, for people")


class TaskCreated(_Public):
    """A task the coordinator relayed to the market; readable through the API at once."""

    task_id: int = Field(description="the market's id of the new task")
    spec_cid: Cid = Field(description="CID of the spec's canonical JSON, now in this coordinator's store")
    tx_hash: HexHash = Field(description="the createTaskFor transaction the coordinator sent")


def _stored_amount(what: str) -> Any:
    return Field(description=f"{what}, base units: a number below 2**53, else a decimal string")


class TermsPublic(_Public):
    """The task's terms as the market emitted them (ITaskMarket.TaskTerms)."""

    spec_hash: HexHash = Field(description="sha256 of the spec's canonical JSON (its CID's digest)")
    coordinator: HexAddress = Field(description="the coordinator that starts rounds and publishes models")
    rounds: int = Field(description="rounds the task runs")
    min_trainers: int = Field(description="quorum: revealed updates a round needs to be finalized")
    max_trainers: int = Field(description="most trainers joined at once")
    slash_bps: int = Field(
        description="share of the stake burned for a rejected update or a missed reveal, bps"
    )
    commit_window: int = Field(description="seconds a round accepts commitments")
    reveal_window: int = Field(description="seconds after the commit phase for reveals")
    reward_pool: StoredAmount = _stored_amount("tokens paid out over all rounds")
    min_stake: StoredAmount = _stored_amount("stake a trainer puts up to join")
    min_validators: int = Field(description="quorum: revealed score vectors a round needs to be finalized")
    max_validators: int = Field(description="most validators joined at once")
    validator_share_bps: int = Field(description="share of each round's budget paid to validators, bps")
    score_window: int = Field(description="seconds after the reveal phase for score commitments")
    score_reveal_window: int = Field(description="seconds after the score-commit phase for score reveals")
    min_validator_stake: StoredAmount = _stored_amount("least stake a validator puts up to join")


class TaskSummary(_Public):
    """A task as listed: its terms and where it stands."""

    task_id: int = Field(description="the market's task id")
    owner: HexAddress = Field(description="who posted and funded the task")
    coordinator: HexAddress = Field(description="the coordinator named in its terms")
    status: TaskState = Field(description="the task's on-chain status")
    spec_cid: Cid = Field(description="CID of the spec's canonical JSON")
    terms: TermsPublic = Field(description="the terms the owner signed")
    current_round: int = Field(description="the latest round started, 0 before the first")
    model_cid: Cid | None = Field(
        description="CID of the global model the next (or current) round trains; null before round 1"
    )
    # Computed from the index (and the chain's phase), not stored: what the dashboard and CLIs show.
    name: str | None = Field(description="the spec's name; null when this coordinator's store lacks the spec")
    phase: str | None = Field(
        description="the current round's phase on chain; none when no round ran yet or the task is closed; "
        "null when the chain did not answer",
        json_schema_extra={"enum": [*PHASES, None]},
    )
    phase_deadline: int | None = Field(
        description="chain time (unix seconds) the current phase ends at the latest (it ends early once "
        "everyone expected acted); null outside the commit, reveal, score-commit and score-reveal phases"
    )
    trainers_joined: int = Field(description="trainers joined now (at most terms.max_trainers)")
    validators_joined: int = Field(description="validators joined now (at most terms.max_validators)")
    rounds_closed: int = Field(description="rounds finalized or aborted, of terms.rounds")
    status_text: str = Field(
        description='where the task stands, in plain words (backend.dashboard.status): e.g. "waiting for 1 '
        'more trainer (1/2)", "round 3: trainers committing (2/3 committed)", "settling round 3", '
        '"completed"'
    )


class RoundSummary(_Public):
    """One round in a task's history."""

    round: int = Field(description="round number, from 1")
    status: RoundState = Field(description="started, then finalized or aborted")
    model_cid: Cid = Field(description="CID of the global model the round trains")
    new_model_cid: Cid | None = Field(
        description="CID of the aggregate of its accepted updates (ModelPublished); null until published"
    )
    report_cid: Cid | None = Field(
        description="CID of the round report (fedmarket.report.RoundReport); null until published"
    )
    payout: DecimalAmount | None = Field(
        description="tokens the round paid in all, trainers and validators, base units; null while open"
    )


class TaskValidator(_Public):
    """A validator joined to a task."""

    validator: HexAddress = Field(description="the validator's account")
    stake: DecimalAmount = Field(description="what it has staked, base units")
    data_hash: HexHash = Field(description="sha256 of the validation data it committed to at join")
    joined_tx: HexHash = Field(description="the joinAsValidator transaction")


class TaskPublic(TaskSummary):
    """A task in full: its summary, who trains and validates, the current phase and every round."""

    trainers: list[HexAddress] = Field(description="trainers joined now, in the order they joined")
    validators: list[TaskValidator] = Field(
        description="validators joined now (at most terms.max_validators), in the order they joined"
    )
    phase: str = Field(  # never null here: this route needs the chain
        description="the current round's phase on chain; none when no round ran yet or the task is closed",
        json_schema_extra={"enum": [*PHASES]},
    )
    rounds: list[RoundSummary] = Field(description="every round started, oldest first")
    refund: DecimalAmount | None = Field(
        description="what the owner got back when the task ended (the pool's rest), base units; null while open"
    )
    chain_time: int = Field(description="chain time of the latest block when this answer was made")


class TaskList(_Public):
    tasks: list[TaskSummary] = Field(description="tasks by id, filtered by status when asked")
    chain_time: int | None = Field(
        default=None,
        description="chain time of the latest block when this list was made (phase deadlines count down "
        "from it); null when the chain did not answer (the phases are then null too)",
    )


class SubmissionPublic(_Public):
    """One committer's part in a round and what the contract's consensus made of it."""

    trainer: HexAddress = Field(description="the committing trainer")
    commitment: HexHash = Field(description="the commitment it sent in the commit phase")
    committed_tx: HexHash = Field(description="the commit transaction")
    update_hash: HexHash | None = Field(description="sha256 of the revealed update; null if never revealed")
    update_cid: Cid | None = Field(description="CID of the revealed update blob; null if never revealed")
    revealed_tx: HexHash | None = Field(description="the reveal transaction; null if never revealed")
    outcome: SubmissionOutcome | None = Field(
        description="the contract's verdict (TrainerSettled), or no_reveal for a slashed silent committer; "
        "null until the round is settled (and for revealers of an aborted round)"
    )
    consensus: DecimalAmount | None = Field(
        description="its consensus value: the stake-weighted median of the validators' normalized "
        "scores, 1e18 = the whole round's value; null until finalized"
    )
    payout: DecimalAmount | None = Field(
        description="what the round paid it, base units; null until finalized"
    )
    slashed: DecimalAmount | None = Field(
        description="stake burned from it this round, base units; null if none"
    )
    num_samples: int | None = Field(
        description="samples it claims, its weight in the aggregate (from the round report); null "
        "unless accepted and published"
    )
    reason: str = Field(
        description="the outcome in plain words, with who flagged it (backend.dashboard.status)"
    )


class RoundValidatorPublic(_Public):
    """One validator's part in a round: its scores and what they earned."""

    validator: HexAddress = Field(description="the validator that committed scores")
    commitment: HexHash = Field(description="its score commitment")
    committed_tx: HexHash = Field(description="the commitScores transaction")
    revealed_tx: HexHash | None = Field(description="the revealScores transaction; null if never revealed")
    scores: dict[str, str] | None = Field(
        description="its revealed entry per revealed trainer: a decimal score, or a flag (unavailable, "
        "invalid, harmful); null if never revealed"
    )
    shares: dict[str, str] | None = Field(
        description="its scores as the consensus rule normalizes them (n[v][i], 1e18 = all of its positive "
        "value) by trainer, a flag by name, `self` for its entry for itself; null if never revealed"
    )
    agreement: DecimalAmount | None = Field(
        description="its agreement with the consensus, 1e18 = full; null until finalized"
    )
    payout: DecimalAmount | None = Field(
        description="what the round paid it, base units; null until finalized"
    )
    slashed: DecimalAmount | None = Field(
        description="stake burned from it for a missed score reveal, base units; null if none"
    )


class RoundPublic(RoundSummary):
    """One round in full: deadlines, transactions, every submission and every validator."""

    task_id: int = Field(description="the market's task id")
    commit_deadline: int = Field(
        description="chain time (unix seconds) the commit phase ends (or ended early)"
    )
    reveal_deadline: int = Field(description="chain time the reveal phase ends (or ended early)")
    score_commit_deadline: int | None = Field(
        description="chain time the score-commit phase ends (or ended early)"
    )
    score_reveal_deadline: int | None = Field(
        description="chain time the score-reveal phase ends (or ended early)"
    )
    closed_at: int | None = Field(description="chain time it was finalized or aborted; null while open")
    trainer_payout: DecimalAmount | None = Field(description="what it paid trainers; null while open")
    validator_payout: DecimalAmount | None = Field(description="what it paid validators; null while open")
    burned: DecimalAmount | None = Field(description="stake it burned in slashes; null while open")
    started_tx: HexHash = Field(description="the startRound transaction")
    closed_tx: HexHash | None = Field(
        description="the finalizeRound or abortRound transaction; null while open"
    )
    published_tx: HexHash | None = Field(description="the publishModel transaction; null until published")
    submissions: list[SubmissionPublic] = Field(
        description="one per committer, by ascending address (the contract's order)"
    )
    validators: list[RoundValidatorPublic] = Field(
        description="one per validator that committed scores, by ascending address"
    )


class EarningsPublic(_Public):
    """What an account earned in a task, as trainer and as validator, and what it claimed."""

    task_id: int = Field(description="the market's task id")
    account: HexAddress = Field(description="the account, checksummed")
    earned: DecimalAmount = Field(description="everything the task paid it so far, base units")
    earned_as_trainer: DecimalAmount = Field(description="the part paid for its updates (TrainerSettled)")
    earned_as_validator: DecimalAmount = Field(description="the part paid for its scores (ValidatorSettled)")
    claimed: DecimalAmount = Field(description="what it claimed (RewardsClaimed), base units")
    claimable: DecimalAmount = Field(
        description="what claim(task_id) pays it now, read from the chain (earned - claimed once indexed)"
    )


class MetricPoint(_Public):
    """One round's point on the task's chart: what the chain says, and what the evaluation set says."""

    round: int = Field(description="round number; 0 is the initial model, before any training")
    status: RoundState | None = Field(description="the round's status; null for round 0")
    model_cid: Cid | None = Field(
        description="the model measured: the round's published aggregate (round 0: the initial model); "
        "null until published"
    )
    closed_at: int | None = Field(
        description="chain time the round was finalized or aborted; null while open"
    )
    revealed: int = Field(description="updates revealed in the round")
    aggregated: int = Field(description="updates in its aggregate (accepted and worthless)")
    loss_drop: float | None = Field(
        description="the loss improvement the validators measured for the round's updates on their own "
        "held-out data (each one's score entries summed, in loss units), median over the validators that "
        "revealed; null for round 0 and until the round is finalized"
    )
    accuracy: float | None = Field(
        description="accuracy of `model_cid` on this coordinator's evaluation set (0..1); null without one"
    )
    loss: float | None = Field(
        description="mean cross-entropy of `model_cid` on the evaluation set; null without one"
    )


class TaskMetrics(_Public):
    """A task's learning curve, one point per round."""

    task_id: int = Field(description="the market's task id")
    evaluation_samples: int | None = Field(
        description="samples in this coordinator's evaluation set for the task; null when it holds none"
    )
    evaluation: str = Field(description="what accuracy and loss are measured on, or why there are none")
    points: list[MetricPoint] = Field(description="round 0 (the initial model) and every round started")


class Slash(_Public):
    round: int = Field(description="the round the stake was burned in")
    amount: DecimalAmount = Field(description="stake burned, base units")
    reason: str = Field(description="why, in plain words")


class TrainerStanding(_Public):
    """A trainer's record in a task."""

    trainer: HexAddress = Field(description="the trainer's account")
    joined: bool = Field(description="joined now (false once it left, withdrew or was slashed)")
    stake: DecimalAmount = Field(description="what it has staked in the task now, base units")
    earned: DecimalAmount = Field(description="what its updates earned, base units")
    claimed: DecimalAmount = Field(
        description="what the account claimed in the task (both roles), base units"
    )
    submitted: int = Field(description="rounds it committed an update in")
    accepted: int = Field(description="rounds its update was accepted (paid) in")
    slashed: DecimalAmount = Field(description="stake burned in all, base units")
    slashes: list[Slash] = Field(description="each slash, oldest first")


class ValidatorStanding(_Public):
    """A validator's record in a task."""

    validator: HexAddress = Field(description="the validator's account")
    joined: bool = Field(description="joined now (false once it left, withdrew or was slashed)")
    stake: DecimalAmount = Field(description="what it has staked in the task now, base units")
    rounds_scored: int = Field(description="rounds it revealed a score vector in")
    agreement: DecimalAmount | None = Field(
        description="its mean agreement with the consensus over the rounds settled with its scores, "
        "1e18 = full; null before its first"
    )
    earned: DecimalAmount = Field(description="what its scores earned, base units")
    claimed: DecimalAmount = Field(
        description="what the account claimed in the task (both roles), base units"
    )
    slashed: DecimalAmount = Field(description="stake burned in all, base units")
    slashes: list[Slash] = Field(description="each slash, oldest first")


class TaskStandings(_Public):
    """Who earned what in a task: the trainers' leaderboard, the validators, the owner's refund."""

    task_id: int = Field(description="the market's task id")
    owner: HexAddress = Field(description="who posted and funded the task")
    refund: DecimalAmount | None = Field(
        description="what the owner got back when the task ended, base units; null while open"
    )
    trainers: list[TrainerStanding] = Field(description="every trainer that ever joined, most earned first")
    validators: list[ValidatorStanding] = Field(
        description="every validator that ever joined, in the order they joined"
    )


class AccountTask(_Public):
    """An account's part in one task."""

    task_id: int = Field(description="the market's task id")
    name: str | None = Field(description="the spec's name; null when this coordinator's store lacks it")
    status: TaskState = Field(description="the task's on-chain status")
    roles: list[Literal["owner", "trainer", "validator"]] = Field(description="what the account is in it")
    earned: DecimalAmount = Field(description="what the task paid it, both roles, base units")
    earned_as_trainer: DecimalAmount = Field(description="the part paid for its updates")
    earned_as_validator: DecimalAmount = Field(description="the part paid for its scores")
    claimed: DecimalAmount = Field(description="what it claimed, base units")
    unclaimed: DecimalAmount = Field(description="earned - claimed: what claim(task_id) pays it, as indexed")
    stake: DecimalAmount = Field(description="what it has staked in the task now, both roles, base units")
    slashed: DecimalAmount = Field(description="stake burned from it in the task, base units")
    refund: DecimalAmount | None = Field(
        description="for the owner, what it got back when the task ended; null otherwise or while open"
    )


class AccountPublic(_Public):
    """Everything this coordinator indexed about one account: its tasks, earnings, claims and stakes."""

    account: HexAddress = Field(description="the account, checksummed")
    earned: DecimalAmount = Field(description="what every task paid it, base units")
    claimed: DecimalAmount = Field(description="what it claimed, base units")
    unclaimed: DecimalAmount = Field(description="earned - claimed, base units")
    stake: DecimalAmount = Field(description="what it has staked now, all tasks, base units")
    tasks: list[AccountTask] = Field(description="each task it owns, trains or validates in, by id")


class BlobStored(_Public):
    cid: Cid = Field(description="the blob's CID: GET /v1/blobs/{cid} returns the same bytes")
    size: int = Field(description="bytes stored")


class CoordinatorInfo(_Public):
    """Who this coordinator is: put its address in task terms."""

    coordinator: HexAddress = Field(description="the coordinator's account (the `coordinator` of task terms)")
    chain_id: int = Field(description="the chain the market is deployed on")
    market: HexAddress = Field(description="the TaskMarket contract")
    token: HexAddress = Field(description="the reward and stake token (FMToken)")
    deploy_block: int = Field(description="the block the market was deployed in")
    orchestrates: str = Field(
        description="which tasks naming this coordinator it runs (starts rounds, pays gas)"
    )
    owner_allowlist: list[HexAddress] = Field(
        description="owners whose tasks naming this coordinator it runs even when posted elsewhere"
    )
    relay_deadline_margin: int = Field(
        description="seconds a relayed task's signature and permit deadlines must exceed the latest block's time by"
    )
    max_blob_bytes: int = Field(description="the largest blob the store takes")
    upload_quota_bytes_per_hour: int = Field(
        description="bytes one address may upload to the store in any hour"
    )


class Health(_Public):
    """Each dependency's answer; the status is 503 when any did not answer."""

    status: Literal["ok", "degraded"] = Field(description="ok when every dependency answered")
    db: str = Field(description='"ok", or "error: <why>"')
    chain: str = Field(description='"ok (block <n>)", or "error: <why>"')
    store: str = Field(description='"ok", or "error: <why>"')

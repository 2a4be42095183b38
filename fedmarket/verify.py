"""Audit a task from public data alone: chain events, chain state, and blobs from any store.

For every round, :func:`verify_task` recomputes what the contract and the coordinator claimed and
lists each disagreement as a :class:`Finding`:
- consensus: the outcomes, consensus values and payouts of every trainer, the agreement and
  payout of every validator, recomputed with :func:`fedmarket.consensus.compute_consensus` from
  the revealed vectors, the validators' stakes and the budget at the block before settlement;
- slashes: every Rejected trainer, non-revealer and silent validator burned `slashBps` of its stake;
- the model: the published model is the spec's aggregation of exactly the aggregated updates on
  the round's model, stepped by the spec's server optimizer (:func:`next_global_model`, every blob
  verified against its hash), and the next round trains on it;
- the report: its hash is the published one, it says what the chain says and names the server
  optimizer state the recomputation arrived at.
No coordinator database and no private data are read; `fedmarket verify` is the command. The
coordinator publishes what :func:`next_global_model` returns, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from fedmarket.aggregation import AdamState, aggregate, decode_adam_state, encode_adam_state, server_step
from fedmarket.chain import MarketClient, RoundInfo, TaskInfo, TrainerInfo, ValidatorInfo
from fedmarket.cid import cid_from_digest, cid_of, digest_of
from fedmarket.codec import Update, apply_delta, decode_update, encode_model, state_delta
from fedmarket.consensus import compute_consensus
from fedmarket.errors import FedmarketError
from fedmarket.ledger import RoundLedger, read_round
from fedmarket.protocol import BPS
from fedmarket.report import RoundReport
from fedmarket.rounds import fetch_model, fetch_spec
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore


@dataclass(frozen=True)
class Finding:
    round_no: int
    what: str  # consensus, slash, model, report
    detail: str

    def __str__(self) -> str:
        return f"round {self.round_no}: {self.what}: {self.detail}"


@dataclass(frozen=True)
class RoundCheck:
    round_no: int
    status: str  # finalized, aborted, open
    checks: int  # how many facts were recomputed and compared
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class NextModel:
    """A round's new global model and the server optimizer state after its step, as blobs to store."""

    model_blob: bytes
    state_blob: bytes | None  # FedAdam's moments (a report names its CID); None for the others

    @property
    def model_hash(self) -> bytes:
        return digest_of(self.model_blob)

    @property
    def state_cid(self) -> str | None:
        return cid_of(self.state_blob) if self.state_blob is not None else None


def next_global_model(
    market: MarketClient,
    store: ContentStore,
    spec: TaskSpec,
    ledger: RoundLedger,
    global_state: Mapping[str, Tensor],
    updates: Sequence[Update],
) -> NextModel:
    """The model a round publishes, from public data alone: the spec's aggregate of ``updates``
    (the round's aggregated ones, in the contract's order) on ``global_state`` (the round's model),
    stepped by the spec's server optimizer.

    The optimizer's inputs come from the round that published ``global_state`` (the last round
    before this one that was not aborted): for FedAvgM its step, the difference of the two models
    it links; for FedAdam the moments its report names. A round with no update to aggregate keeps
    the model and carries FedAdam's moments forward.
    """
    previous = _producing_round(market, ledger)
    last_step, state = _server_inputs(store, spec, previous, global_state)
    if not updates:
        new_state = {name: tensor.clone() for name, tensor in global_state.items()}
    else:
        result = aggregate([u.delta for u in updates], [u.num_samples for u in updates], spec.aggregation)
        step = server_step(result.delta, spec.aggregation, last_step=last_step, state=state)
        new_state, state = apply_delta(global_state, step.step), step.state
    return NextModel(encode_model(new_state), encode_adam_state(state) if state is not None else None)


def _producing_round(market: MarketClient, ledger: RoundLedger) -> RoundInfo | None:
    """The round whose published model ``ledger``'s round trained on; None for the initial model."""
    for round_no in range(ledger.round_no - 1, 0, -1):
        info = market.round(ledger.task_id, round_no)
        if info.aborted:
            continue
        if not info.model_published or info.new_model_hash != ledger.model_hash:
            raise FedmarketError(
                f"round {ledger.round_no} trains {ledger.model_hash.hex()}, which round {round_no} "
                "did not publish"
            )
        return info
    return None


def _server_inputs(
    store: ContentStore, spec: TaskSpec, previous: RoundInfo | None, global_state: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor] | None, AdamState | None]:
    """(FedAvgM's last step, FedAdam's moments) for the round after ``previous``; None where unused."""
    if previous is None:
        return None, None
    match spec.aggregation.server_optimizer:
        case "fedavgm":
            return state_delta(global_state, fetch_model(store, spec, previous.model_hash)), None
        case "fedadam":
            report = RoundReport.from_json(store.get(cid_from_digest(previous.report_hash)))
            if report.server_state_cid is None:
                return None, None
            return None, decode_adam_state(store.get(report.server_state_cid), model=global_state)
    return None, None


def verify_task(
    market: MarketClient, store: ContentStore, task_id: int, rounds: list[int] | None = None
) -> list[RoundCheck]:
    """Every (or each listed) round of `task_id`, checked; a round with no findings is verified."""
    info = market.task(task_id)
    spec = fetch_spec(store, info.terms.spec_hash)
    results = []
    for round_no in rounds or range(1, info.current_round + 1):
        ledger = read_round(market, task_id, round_no)
        results.append(_check_round(market, store, info, spec, ledger))
    return results


def _check_round(market, store, info: TaskInfo, spec, ledger: RoundLedger) -> RoundCheck:
    findings: list[Finding] = []
    checks = 0

    def expect(what: str, actual, expected, detail: str) -> None:
        nonlocal checks
        checks += 1
        if actual != expected:
            findings.append(
                Finding(ledger.round_no, what, f"{detail}: chain says {actual}, recomputed {expected}")
            )

    round_info = market.round(info.task_id, ledger.round_no)
    if not round_info.closed:
        return RoundCheck(ledger.round_no, "open", 0, ())
    if ledger.aborted:
        _check_slashes(market, info, ledger, expect, rejected=[])
        return RoundCheck(ledger.round_no, "aborted", checks, tuple(findings))
    if ledger.finalized_block is None:
        findings.append(Finding(ledger.round_no, "consensus", "closed but no RoundFinalized event"))
        return RoundCheck(ledger.round_no, "finalized", checks, tuple(findings))

    before = ledger.finalized_block - 1
    validators = ledger.validators
    stakes = [market.validator(info.task_id, v, block=before).stake for v in validators]
    consensus = compute_consensus(
        trainers=ledger.trainers, validators=validators, stakes=stakes,
        scores=[ledger.score_reveals[v] for v in validators],
        budget=market.round_budget(info.task_id, block=before),
        validator_share_bps=info.terms.validator_share_bps,
    )  # fmt: skip
    for result in consensus.trainers:
        settled = ledger.settled_trainers.get(result.trainer)
        if settled is None:
            findings.append(Finding(ledger.round_no, "consensus", f"no TrainerSettled for {result.trainer}"))
            continue
        expect("consensus", settled.outcome, result.outcome, f"outcome of {result.trainer}")
        expect("consensus", settled.consensus, result.consensus, f"consensus value of {result.trainer}")
        expect("consensus", settled.payout, result.payout, f"payout of {result.trainer}")
    for result_v in consensus.validators:
        settled_v = ledger.settled_validators.get(result_v.validator)
        if settled_v is None:
            findings.append(
                Finding(ledger.round_no, "consensus", f"no ValidatorSettled for {result_v.validator}")
            )
            continue
        expect("consensus", settled_v.agreement, result_v.agreement, f"agreement of {result_v.validator}")
        expect("consensus", settled_v.payout, result_v.payout, f"payout of {result_v.validator}")
    expect(
        "consensus",
        round_info.payout,
        consensus.trainer_payout + consensus.validator_payout,
        "the round's payout",
    )
    rejected = [t.trainer for t in consensus.trainers if t.outcome.name == "REJECTED"]
    _check_slashes(market, info, ledger, expect, rejected=rejected)

    if not round_info.model_published:
        findings.append(Finding(ledger.round_no, "model", "the aggregate was never published"))
        return RoundCheck(ledger.round_no, "finalized", checks, tuple(findings))
    expected: NextModel | None = None
    try:
        expected = _recompute_model(market, store, spec, ledger, consensus.aggregated())
        expect("model", round_info.new_model_hash.hex(), expected.model_hash.hex(), "published model hash")
    except FedmarketError as exc:
        findings.append(Finding(ledger.round_no, "model", f"cannot recompute the aggregate: {exc}"))
    try:
        store.get(cid_from_digest(round_info.new_model_hash))  # the store checks the blob against its hash
        checks += 1
    except FedmarketError as exc:
        findings.append(Finding(ledger.round_no, "model", f"the published model cannot be fetched: {exc}"))
    if ledger.round_no < info.current_round:
        next_round = market.round(info.task_id, ledger.round_no + 1)
        expect("model", next_round.model_hash.hex(), round_info.new_model_hash.hex(), "next round's model")
    findings.extend(_check_report(store, ledger, round_info, consensus, expected))
    checks += 1
    return RoundCheck(ledger.round_no, "finalized", checks, tuple(findings))


def _slash_of(member: TrainerInfo | ValidatorInfo, slash_bps: int) -> int:
    """What a slash takes: `slashBps` of the stake, or all that is left of it from one that left
    during a pause (it left exactly that share)."""
    return member.stake * slash_bps // BPS if member.joined else member.stake


def _check_slashes(market, info: TaskInfo, ledger: RoundLedger, expect, *, rejected: list[str]) -> None:
    block = (ledger.finalized_block or _closing_block(market, info.task_id, ledger.round_no)) - 1
    for trainer in [*ledger.non_revealers, *rejected]:
        slash = _slash_of(market.trainer(info.task_id, trainer, block=block), info.terms.slash_bps)
        expect("slash", ledger.trainer_slashes.get(trainer, 0), slash, f"stake burned from trainer {trainer}")
    for validator in ledger.silent_validators:
        slash = _slash_of(market.validator(info.task_id, validator, block=block), info.terms.slash_bps)
        expect(
            "slash",
            ledger.validator_slashes.get(validator, 0),
            slash,
            f"stake burned from validator {validator}",
        )
    expect(
        "slash",
        sorted(ledger.trainer_slashes),
        sorted([*ledger.non_revealers, *rejected]),
        "trainers slashed",
    )


def _closing_block(market: MarketClient, task_id: int, round_no: int) -> int:
    for event in market.iter_events("RoundAborted", task_id=task_id):
        if event.args["round"] == round_no:
            return event.block_number
    raise FedmarketError(f"round {round_no} has no RoundAborted event")


def _recompute_model(
    market: MarketClient, store: ContentStore, spec: TaskSpec, ledger: RoundLedger, aggregated: list[str]
) -> NextModel:
    global_state = fetch_model(store, spec, ledger.model_hash)
    updates = [
        decode_update(store.get(cid_from_digest(ledger.reveals[t])), model=global_state) for t in aggregated
    ]
    return next_global_model(market, store, spec, ledger, global_state, updates)


def _check_report(
    store: ContentStore, ledger: RoundLedger, round_info, consensus, expected: NextModel | None
) -> Iterator[Finding]:
    try:
        report = RoundReport.from_json(store.get(cid_from_digest(round_info.report_hash)))
    except FedmarketError as exc:
        yield Finding(ledger.round_no, "report", f"unreadable: {exc}")
        return
    by_trainer = consensus.by_trainer()
    for item in report.submissions:
        result = by_trainer.get(item.trainer)
        if result is not None and (item.payout, item.consensus) != (result.payout, result.consensus):
            yield Finding(
                ledger.round_no,
                "report",
                f"says {item.trainer} earned {item.payout}, the chain {result.payout}",
            )
    if report.new_model_cid != cid_from_digest(round_info.new_model_hash):
        yield Finding(ledger.round_no, "report", "names another model than the published one")
    if expected is not None and report.server_state_cid != expected.state_cid:
        # The next round's FedAdam step starts from the state named here: a wrong one is a wrong model.
        yield Finding(
            ledger.round_no,
            "report",
            f"names server optimizer state {report.server_state_cid}, recomputed {expected.state_cid}",
        )

"""What a task owner prepares before posting, as plain functions (the `fedmarket-owner` CLI and
`scripts/post_task.py` both use them).

    spec = load_spec("spec.yaml")                       # JSON or YAML in the TaskSpec schema
    data = load_owner_data("mine.csv", spec)            # the one rule that data fits a spec
    files = plan_split(data, validation_path=Path("data/validator-owner.csv"), shards=3)
    terms = TermsOptions(pool=parse_tokens("1000")).to_terms(spec, coordinator)
    posted = post_with_split(api, market, spec=spec, terms=terms, owner=account, data=data, files=files)

Split files are written in the spec's own data format, with the owner's rows as they were in its
file (before `feature_scale`), so a validator or trainer node loads them with the same spec. The
validation split stays on the owner's machine: only the owner's validator reads it.

Keys and amounts are parsed strictly: a key is exactly 32 bytes of hex (a shorter one must not
quietly become another account), and FMT amounts are decimals converted to base units exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import numpy as np
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from fedmarket import display
from fedmarket.chain import MarketClient
from fedmarket.client import TOKEN_FIELDS, CoordinatorClient
from fedmarket.datasets import dirichlet_split, save_npz, train_test_split
from fedmarket.deploy import ONE_TOKEN
from fedmarket.errors import FedmarketError
from fedmarket.files import atomic_write
from fedmarket.keys import account_from_key
from fedmarket.learning import LocalData, check_local_data, load_local_data
from fedmarket.learning.data import read_csv, read_npz  # the raw rows load_local_data checks
from fedmarket.models import build_model
from fedmarket.protocol import BPS, TaskTerms
from fedmarket.spec import TaskSpec

__all__ = [
    "OwnerData",
    "OwnerInputError",
    "SplitFile",
    "TermsOptions",
    "check_targets",
    "joined_accounts",
    "load_owner_data",
    "load_spec",
    "parse_address",
    "parse_percent",
    "parse_private_key",
    "parse_tokens",
    "plan_split",
    "post_with_split",
    "terms_json",
    "write_rows",
]

UINT96_MAX = 2**96 - 1


class OwnerInputError(FedmarketError, ValueError):
    """The owner's key, an amount, the spec file or the data cannot be used; nothing was posted."""


# ---------------------------------------------------------------------- keys and amounts


def parse_private_key(text: str, *, what: str = "the owner key") -> LocalAccount:
    """The owner's signing account (:func:`fedmarket.keys.account_from_key`: exactly 32 bytes of hex)."""
    return account_from_key(text, what=what)


def parse_address(text: str, *, what: str = "address") -> str:
    """A 0x-prefixed 20-byte address, checksummed."""
    if not is_address(text.strip()):
        raise OwnerInputError(f"{what} must be a 0x-prefixed 20-byte address, got {text!r}")
    return to_checksum_address(text.strip())


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        raise OwnerInputError(f"{what} must be a decimal number, got {text!r}") from None
    if not value.is_finite():
        raise OwnerInputError(f"{what} must be a finite number, got {text!r}")
    return value


def parse_tokens(text: str, *, what: str = "amount") -> int:
    """FMT (decimals allowed, e.g. "12.5") in base units, exactly (:func:`fedmarket.display.parse_tokens`),
    and within what the contract stores (more than 0, at most a uint96)."""
    try:
        base = display.parse_tokens(text.strip().replace("_", ""))
    except ValueError as exc:
        raise OwnerInputError(f"{what}: {exc}") from None
    if base <= 0 or base > UINT96_MAX:
        raise OwnerInputError(f"{what} must be more than 0 and at most {display.tokens(UINT96_MAX)} FMT")
    return base


def parse_percent(text: str, *, what: str = "share") -> int:
    """A percentage ("10", "12.5" or "12.5%") in basis points, exactly (0.01% steps)."""
    value = _decimal(text.strip().removesuffix("%"), what)
    bps = value * 100
    if bps != bps.to_integral_value() or not 0 <= bps <= BPS:
        raise OwnerInputError(f"{what} must be a percentage from 0 to 100 in steps of 0.01, got {text!r}")
    return int(bps)


# ---------------------------------------------------------------------- spec and data


def load_spec(path: str | Path) -> TaskSpec:
    """A spec file in the TaskSpec schema: YAML for .yaml/.yml (needs PyYAML), JSON otherwise;
    its layers are built once, so a model that cannot exist is refused before anything is posted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no spec file at {path}")
    raw = path.read_bytes()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise OwnerInputError(
                f"{path.name} is YAML, which needs PyYAML (pip install pyyaml); or write the spec as JSON"
            ) from None
        try:
            fields = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise OwnerInputError(f"{path.name} is not valid YAML: {exc}") from None
        if not isinstance(fields, dict):
            raise OwnerInputError(f"{path.name} must hold a mapping of TaskSpec fields (name, layers, ...)")
        raw = json.dumps(fields, default=str).encode()  # one validation path for both formats
    try:
        spec = TaskSpec.from_json(raw)
        build_model(spec)
    except FedmarketError as exc:  # SpecError, ModelBuildError
        raise OwnerInputError(f"{path.name}: {exc}") from None
    return spec


@dataclass(frozen=True)
class OwnerData:
    """The owner's samples twice: `rows` as the file holds them (what split files get) and
    `checked` as the spec reads them (scaled, reshaped, labels as class indices)."""

    format: Literal["npz", "csv"]
    features: np.ndarray  # raw: an NPZ's X as stored, or a CSV's columns but the label
    labels: np.ndarray
    checked: LocalData
    columns: tuple[str, ...] | None = None  # a CSV's header, in file order
    label_column: str = "label"

    def __len__(self) -> int:
        return len(self.checked)

    @classmethod
    def from_arrays(cls, X: np.ndarray, y: np.ndarray, spec: TaskSpec) -> OwnerData:
        """Arrays already in memory (a bundled data set), checked against the spec like a file."""
        checked = check_local_data(X, y, spec)
        return cls(spec.data.format, np.asarray(X), np.asarray(y), checked, None, spec.data.label_column)


def load_owner_data(path: str | Path, spec: TaskSpec) -> OwnerData:
    """The owner's file, checked by `load_local_data` (the rule every node applies; it raises
    DataMismatchError naming the problem), plus its raw rows to write split files from."""
    path = Path(path)
    checked = load_local_data(path, spec)
    if spec.data.format == "npz":
        X, y = read_npz(path, name=path.name)
        return OwnerData("npz", X, y, checked, None, spec.data.label_column)
    features, labels = read_csv(path, label_column=spec.data.label_column)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = tuple(name.strip() for name in next(csv.reader(handle)))
    return OwnerData("csv", features, labels, checked, header, spec.data.label_column)


# ---------------------------------------------------------------------- split files


@dataclass(frozen=True)
class SplitFile:
    """One file to write: the owner's validation split or a trainer shard, as rows of the data."""

    role: Literal["validation", "trainer"]
    path: Path
    rows: np.ndarray


def plan_split(
    data: OwnerData,
    *,
    validation_path: Path,
    validation_fraction: float = 0.2,
    shards: int = 0,
    shards_dir: Path = Path("data"),
    alpha: float | None = None,
    seed: int = 0,
) -> list[SplitFile]:
    """A stratified validation split, then `shards` trainer shards of the rest: IID (`alpha`
    None) or label-skewed by Dirichlet(`alpha`). The same data and seed give the same files."""
    if not 0.0 < validation_fraction < 1.0:
        raise OwnerInputError(f"the validation fraction must be between 0 and 1, got {validation_fraction}")
    labels = data.checked.y
    try:
        train_rows, validation_rows, _, _ = train_test_split(
            np.arange(len(labels)), labels, test_fraction=validation_fraction, seed=seed
        )
    except ValueError as exc:  # scikit-learn: a class too small to appear on both sides
        raise OwnerInputError(
            f"cannot split off a stratified {validation_fraction:.0%} validation split from "
            f"{len(labels)} samples: {exc}"
        ) from None
    files = [SplitFile("validation", Path(validation_path), np.sort(validation_rows))]
    if shards:
        if len(train_rows) < shards:
            raise OwnerInputError(f"cannot cut {len(train_rows)} training samples into {shards} shards")
        if alpha is None:
            order = np.random.default_rng(seed).permutation(train_rows)
            parts = [np.sort(part) for part in np.array_split(order, shards)]
        else:
            try:
                picked = dirichlet_split(
                    labels[train_rows], parts=shards, alpha=alpha, seed=seed,
                    min_size=min(10, len(train_rows) // shards),
                )  # fmt: skip
            except ValueError as exc:
                raise OwnerInputError(str(exc)) from None
            parts = [np.sort(train_rows[part]) for part in picked]
        files += [
            SplitFile("trainer", Path(shards_dir) / f"trainer-{i}.{data.format}", part)
            for i, part in enumerate(parts)
        ]
    return files


def check_targets(files: Sequence[SplitFile], *, overwrite: bool = False) -> None:
    """Refuse to replace existing files: a validator's split is committed by hash at join, and
    losing it strands the validator of an earlier task."""
    paths = [f.path.resolve() for f in files]
    if len(set(paths)) != len(paths):
        raise OwnerInputError("the validation split and a trainer shard would be the same file")
    existing = [str(f.path) for f in files if f.path.exists()]
    if existing and not overwrite:
        raise OwnerInputError(f"{', '.join(existing)} already exist; pick other paths or pass --force")


def write_rows(data: OwnerData, rows: np.ndarray, path: Path) -> Path:
    """The given rows, as the owner's file held them, in the data's format (crash-safe)."""
    if data.format == "npz":
        return save_npz(path, data.features[rows], data.labels[rows])
    columns = data.columns or (*(f"x{i}" for i in range(data.features.shape[1])), data.label_column)
    at = columns.index(data.label_column)
    table = np.insert(np.asarray(data.features, dtype=np.float64)[rows], at, data.labels[rows], axis=1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(value) for value in row] for row in table.tolist())
    return atomic_write(path, out.getvalue().encode())


def _cell(value: float) -> str:
    """The shortest text that reads back as the same float64 (whole numbers without ".0")."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


# ---------------------------------------------------------------------- terms and posting


@dataclass(frozen=True)
class TermsOptions:
    """The owner's choices for the on-chain terms; amounts in base units, shares in basis points.
    The contract checks them (`TaskMarketInvalidTerms(field)`) when the coordinator simulates."""

    pool: int = 1_000 * ONE_TOKEN
    rounds: int = 3
    min_trainers: int = 2
    max_trainers: int = 10
    stake: int = 10 * ONE_TOKEN
    validator_stake: int = 10 * ONE_TOKEN
    min_validators: int = 1
    max_validators: int = 5
    validator_share_bps: int = 1_000
    slash_bps: int = 5_000
    commit_window: int = 120
    reveal_window: int = 60
    score_window: int = 120
    score_reveal_window: int = 60

    def to_terms(self, spec: TaskSpec, coordinator: str) -> TaskTerms:
        return TaskTerms(
            spec_hash=spec.spec_hash(), coordinator=coordinator, rounds=self.rounds,
            min_trainers=self.min_trainers, max_trainers=self.max_trainers, slash_bps=self.slash_bps,
            commit_window=self.commit_window, reveal_window=self.reveal_window, reward_pool=self.pool,
            min_stake=self.stake, min_validators=self.min_validators, max_validators=self.max_validators,
            validator_share_bps=self.validator_share_bps, score_window=self.score_window,
            score_reveal_window=self.score_reveal_window, min_validator_stake=self.validator_stake,
        )  # fmt: skip


def terms_json(terms: TaskTerms) -> dict[str, Any]:
    """Terms for JSON output: amounts as decimal strings of base units, the spec hash as 0x-hex."""
    fields = dataclasses.asdict(terms)
    fields["spec_hash"] = "0x" + terms.spec_hash.hex()
    return {name: str(value) if name in TOKEN_FIELDS else value for name, value in fields.items()}


def joined_accounts(chain: MarketClient, task_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """Trainers and validators joined now, each with its stake, from the chain alone: everyone a
    join event names, kept while the contract still counts it joined (left and slashed drop out)."""
    trainers = dict.fromkeys(e.args["trainer"] for e in chain.iter_events("TrainerJoined", task_id=task_id))
    validators = dict.fromkeys(
        e.args["validator"] for e in chain.iter_events("ValidatorJoined", task_id=task_id)
    )
    joined_trainers = {a: t.stake for a in trainers if (t := chain.trainer(task_id, a)).joined}
    joined_validators = {a: v.stake for a in validators if (v := chain.validator(task_id, a)).joined}
    return joined_trainers, joined_validators


def post_with_split(
    api: CoordinatorClient,
    market: MarketClient,
    *,
    spec: TaskSpec,
    terms: TaskTerms,
    owner: LocalAccount,
    data: OwnerData,
    files: Sequence[SplitFile],
) -> dict:
    """Writes the split files, then posts the task (the key signs here; only signatures travel).
    A refused post removes the files again: a posted task always has its owner's split on disk,
    and a failed one leaves nothing behind."""
    written: list[Path] = []
    try:
        for file in files:
            written.append(write_rows(data, file.rows, file.path))
        return api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise

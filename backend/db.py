"""The coordinator's database: an index of the chain's events plus what only the coordinator knows.

Every table but `cursors` is an index of the chain, written by the indexer alone: `events`, and
the projections `tasks`, `rounds`, `submissions`, `validators`, `round_validators`, `earnings`.
Deleting the database and indexing again rebuilds the same state from the chain's events (and
chain state at their blocks, for the deadlines that move when phases close early); the round
reports in the store add one informational column (`submissions.num_samples`). The coordinator
keeps no decision of its own: the contract settles rounds, so nothing here must survive a crash.

Token amounts are stored as decimal strings: they exceed 64-bit integers.
Schema changes go through Alembic (`backend/migrations`), applied at start.
"""

from __future__ import annotations

import enum
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Boolean, Integer, String, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    pass


class TaskState(enum.StrEnum):
    """`tasks.status`: a task's on-chain status (fedmarket.protocol.TaskStatus) as the API names it."""

    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class RoundState(enum.StrEnum):
    """`rounds.status`: started, then closed one way or the other."""

    STARTED = "started"
    FINALIZED = "finalized"
    ABORTED = "aborted"


class ChainEventRow(Base):
    """One TaskMarket log, keyed by its position in the chain: indexing it twice is a no-op."""

    __tablename__ = "events"
    block_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    name: Mapped[str] = mapped_column(String(64), index=True)
    task_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    args: Mapped[dict] = mapped_column(JSON)


class Cursor(Base):
    """Last block fully indexed."""

    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    block_number: Mapped[int] = mapped_column(Integer)


class TaskRow(Base):
    __tablename__ = "tasks"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    coordinator: Mapped[str] = mapped_column(String(42))
    spec_cid: Mapped[str] = mapped_column(String(80))
    terms: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # a TaskState
    created_tx: Mapped[str] = mapped_column(String(66))
    created_block: Mapped[int] = mapped_column(Integer)
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    model_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)
    refund: Mapped[str | None] = mapped_column(String(80), nullable=True)


class RoundRow(Base):
    """One round. Deadlines are the chain's (`getRound` at the round's latest event): phases
    close early, and the later deadlines move up with them, so `RoundStarted`'s are provisional."""

    __tablename__ = "rounds"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # a RoundState
    model_cid: Mapped[str] = mapped_column(String(80))
    commit_deadline: Mapped[int] = mapped_column(Integer)
    reveal_deadline: Mapped[int] = mapped_column(Integer)
    score_commit_deadline: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score_reveal_deadline: Mapped[int | None] = mapped_column(Integer, nullable=True)
    closed_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_tx: Mapped[str] = mapped_column(String(66))
    closed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    payout: Mapped[str | None] = mapped_column(String(80), nullable=True)  # trainers + validators
    trainer_payout: Mapped[str | None] = mapped_column(String(80), nullable=True)
    validator_payout: Mapped[str | None] = mapped_column(String(80), nullable=True)
    burned: Mapped[str | None] = mapped_column(String(80), nullable=True)
    new_model_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)  # from ModelPublished
    report_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)  # from ModelPublished
    published_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class SubmissionRow(Base):
    """One trainer's part in one round: commit, reveal, and what the contract's consensus made of it."""

    __tablename__ = "submissions"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    trainer: Mapped[str] = mapped_column(String(42), primary_key=True)
    commitment: Mapped[str] = mapped_column(String(66))
    committed_tx: Mapped[str] = mapped_column(String(66))
    update_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    update_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)
    revealed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)  # a SubmissionOutcome
    consensus: Mapped[str | None] = mapped_column(String(80), nullable=True)  # 1e18 = the round's value
    payout: Mapped[str | None] = mapped_column(String(80), nullable=True)
    slashed: Mapped[str | None] = mapped_column(String(80), nullable=True)
    num_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)  # from the round report


class ValidatorRow(Base):
    """A validator of a task: its stake and the data it committed to at join."""

    __tablename__ = "validators"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    validator: Mapped[str] = mapped_column(String(42), primary_key=True)
    stake: Mapped[str] = mapped_column(String(80))  # what it has staked in the task now
    data_hash: Mapped[str] = mapped_column(String(66))
    joined: Mapped[bool] = mapped_column(Boolean)  # false once it left, was slashed or withdrew
    joined_tx: Mapped[str] = mapped_column(String(66))
    joined_block: Mapped[int] = mapped_column(Integer)


class RoundValidatorRow(Base):
    """One validator's part in one round: its score commit and reveal, and its settlement."""

    __tablename__ = "round_validators"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    validator: Mapped[str] = mapped_column(String(42), primary_key=True)
    commitment: Mapped[str] = mapped_column(String(66))
    committed_tx: Mapped[str] = mapped_column(String(66))
    revealed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    # trainer -> entry (a decimal score, or "unavailable" / "invalid" / "harmful")
    scores: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    agreement: Mapped[str | None] = mapped_column(String(80), nullable=True)  # 1e18 = full agreement
    payout: Mapped[str | None] = mapped_column(String(80), nullable=True)
    slashed: Mapped[str | None] = mapped_column(String(80), nullable=True)


class EarningRow(Base):
    """What an account earned in a task (as trainer and as validator) and what it claimed."""

    __tablename__ = "earnings"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(42), primary_key=True)
    as_trainer: Mapped[str] = mapped_column(String(80), default="0")
    as_validator: Mapped[str] = mapped_column(String(80), default="0")
    claimed: Mapped[str] = mapped_column(String(80), default="0")


class Database:
    """Engine + session factory; `migrate()` brings the schema to Alembic's head."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, connect_args=_connect_args(url), pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection_url"] = self.url
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self):
        """A unit of work: committed on success, rolled back on any error."""
        session: Session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _connect_args(url: str) -> dict:
    # The API's worker threads and the background threads share the engine.
    return {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the indexer's writes
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

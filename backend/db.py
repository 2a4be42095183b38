"""The coordinator's database: an index of the chain's events plus what only the coordinator knows.

Chain-derived tables (`events`, `tasks`, `rounds`, `submissions`, `earnings`) are written by the
indexer alone and can be rebuilt from the chain plus the store (round reports hold scores and
cumulative earnings). `settlements` records every settlement the orchestrator is about to send,
so a restart re-sends exactly that one and never computes a second, different one;
`used_signatures` remembers owner upload signatures so none can be replayed.

Token amounts are stored as decimal strings: they exceed 64-bit integers.
Schema changes go through Alembic (`backend/migrations`), applied at start.
"""

from __future__ import annotations

import enum
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    has_validation_data: Mapped[bool] = mapped_column(Boolean, default=False)


class RoundRow(Base):
    __tablename__ = "rounds"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # a RoundState
    model_cid: Mapped[str] = mapped_column(String(80))
    commit_deadline: Mapped[int] = mapped_column(Integer)
    reveal_deadline: Mapped[int] = mapped_column(Integer)
    started_tx: Mapped[str] = mapped_column(String(66))
    closed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    new_model_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)
    report_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)
    rewards_root: Mapped[str | None] = mapped_column(String(66), nullable=True)
    payout: Mapped[str | None] = mapped_column(String(80), nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class SubmissionRow(Base):
    """One trainer's part in one round: commit, reveal, and the coordinator's verdict."""

    __tablename__ = "submissions"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    trainer: Mapped[str] = mapped_column(String(42), primary_key=True)
    commitment: Mapped[str] = mapped_column(String(66))
    committed_tx: Mapped[str] = mapped_column(String(66))
    update_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    update_cid: Mapped[str | None] = mapped_column(String(80), nullable=True)
    revealed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    accepted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    payout: Mapped[str | None] = mapped_column(String(80), nullable=True)
    slashed: Mapped[str | None] = mapped_column(String(80), nullable=True)


class EarningRow(Base):
    __tablename__ = "earnings"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trainer: Mapped[str] = mapped_column(String(42), primary_key=True)
    cumulative: Mapped[str] = mapped_column(String(80), default="0")
    claimed: Mapped[str] = mapped_column(String(80), default="0")


class SettlementRow(Base):
    """A settlement decided by the orchestrator, written before its transaction is sent."""

    __tablename__ = "settlements"
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    payload: Mapped[dict] = mapped_column(JSON)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsedSignatureRow(Base):
    __tablename__ = "used_signatures"
    # keccak256 of the signed statement: a signature's bytes have twins that recover the same signer.
    signature_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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

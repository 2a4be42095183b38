"""What the API and the background workers share, built once per app from the settings.

:class:`Supervisor` runs the indexer and one orchestrator thread per task this coordinator
orchestrates (:meth:`Services.orchestrates`: it names this coordinator, and was posted through
this coordinator's `POST /v1/tasks` or by an owner in ``owner_allowlist``) and that still needs
it (open, or its last round's model not yet published), and stops them all on shutdown. A task
that merely names this coordinator gets no thread and costs it no gas.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

from eth_typing import HexStr
from sqlalchemy import select

from backend.db import Database, RoundRow, RoundState, TaskRow, TaskState
from backend.indexer import Indexer
from backend.orchestrator import TaskOrchestrator
from backend.settings import Settings
from backend.uploads import UploadGate
from fedmarket.chain import MarketClient
from fedmarket.deploy import Deployment
from fedmarket.errors import FedmarketError
from fedmarket.store import DirectoryStore
from fedmarket.transactions import map_transport_errors

log = logging.getLogger("fedmarket.coordinator")


@dataclass
class Services:
    settings: Settings
    db: Database
    store: DirectoryStore
    chain: MarketClient
    indexer: Indexer
    uploads: UploadGate
    supervisor: Supervisor | None = None
    _relayed: dict[str, bool] = field(default_factory=dict)  # creating tx -> sent by this coordinator

    @classmethod
    def build(cls, settings: Settings) -> Services:
        deployment = Deployment.load(settings.deployment_file)
        chain = MarketClient.connect(settings.rpc_url, deployment, private_key=settings.signing_key())
        db = Database(settings.resolved_database_url)
        db.migrate()
        store = DirectoryStore(settings.resolved_store_dir, max_blob_bytes=settings.max_blob_bytes)
        indexer = Indexer(chain=chain, db=db, store=store)
        return cls(settings, db, store, chain, indexer, UploadGate(settings))

    def orchestrates(self, task: TaskRow) -> bool:
        """Whether this coordinator runs `task`'s rounds (and pays their gas): it names this
        coordinator, and its owner is allowlisted or its creating transaction was this
        coordinator's relay (`POST /v1/tasks`). Decided from the chain, so a rebuilt index agrees."""
        me = self.chain.signer
        if task.coordinator.lower() != me.lower():
            return False
        if task.owner.lower() in {owner.lower() for owner in self.settings.owner_allowlist}:
            return True
        if task.created_tx not in self._relayed:
            with map_transport_errors(self.chain.w3, f"reading transaction {task.created_tx}"):
                sender = self.chain.w3.eth.get_transaction(HexStr(task.created_tx))["from"]
            self._relayed[task.created_tx] = str(sender).lower() == me.lower()
        return self._relayed[task.created_tx]

    def orchestrator(self, task_id: int) -> TaskOrchestrator:
        return TaskOrchestrator(task_id=task_id, chain=self.chain, store=self.store, db=self.db)

    def close(self) -> None:
        if self.supervisor:
            self.supervisor.stop()
        self.db.dispose()


@dataclass
class Supervisor:
    services: Services
    stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)

    def start(self) -> None:
        self._spawn("indexer", self._index_and_dispatch)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads[name] = thread
        thread.start()

    def _index_and_dispatch(self) -> None:
        """Indexes new blocks, then gives every open task of ours an orchestrator thread."""
        interval = self.services.settings.poll_interval
        while not self.stop_event.is_set():
            try:
                self.dispatch_once()
            except FedmarketError as exc:  # the chain or the store is down: say so, try again
                log.warning("supervisor: %s; retrying", exc)
            except Exception:  # a bug must not stop the indexer: log it whole and retry
                log.exception("supervisor: unexpected error; retrying")
            self.stop_event.wait(interval)

    def dispatch_once(self) -> list[int]:
        """Indexes new blocks and starts a thread for every task to orchestrate that has none;
        returns the ids of the tasks it orchestrates now."""
        services, interval = self.services, self.services.settings.poll_interval
        services.indexer.sync_once()
        with services.db.session() as session:
            candidates = _tasks_to_run(session)
            session.expunge_all()
        active = [t.task_id for t in candidates if services.orchestrates(t)]
        for task_id in active:
            name = f"task-{task_id}"
            if name not in self._threads or not self._threads[name].is_alive():
                log.info("orchestrating task %s", task_id)
                run = functools.partial(services.orchestrator(task_id).run, poll_interval=interval)
                self._spawn(name, run, self.stop_event)
        return active


def _tasks_to_run(session) -> list[TaskRow]:
    """Open tasks, and completed ones whose last round is finalized but its model not published
    yet (a coordinator stopped between the two): publishModel works after the last round too."""
    tasks = list(session.scalars(select(TaskRow).where(TaskRow.status == TaskState.OPEN)))
    unpublished = (
        select(TaskRow)
        .join(RoundRow, (RoundRow.task_id == TaskRow.task_id) & (RoundRow.round == TaskRow.current_round))
        .where(
            TaskRow.status == TaskState.COMPLETED,
            RoundRow.status == RoundState.FINALIZED,
            RoundRow.new_model_cid.is_(None),
        )
    )
    return tasks + list(session.scalars(unpublished))

"""What the API and the background workers share, built once per app from the settings.

:class:`Supervisor` runs the indexer and one orchestrator thread per task that names this
coordinator and still needs it (open, or its last round's model not yet published), and stops
them all on shutdown.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import select

from backend.db import Database, RoundRow, RoundState, TaskRow, TaskState
from backend.indexer import Indexer
from backend.orchestrator import TaskOrchestrator
from backend.settings import Settings
from fedmarket.chain import MarketClient
from fedmarket.deploy import Deployment
from fedmarket.errors import FedmarketError
from fedmarket.store import DirectoryStore

log = logging.getLogger("fedmarket.coordinator")


@dataclass
class Services:
    settings: Settings
    db: Database
    store: DirectoryStore
    chain: MarketClient
    indexer: Indexer
    supervisor: Supervisor | None = None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        deployment = Deployment.load(settings.deployment_file)
        chain = MarketClient.connect(settings.rpc_url, deployment, private_key=settings.signing_key())
        db = Database(settings.resolved_database_url)
        db.migrate()
        store = DirectoryStore(settings.resolved_store_dir, max_blob_bytes=settings.max_blob_bytes)
        indexer = Indexer(chain=chain, db=db, store=store)
        return cls(settings, db, store, chain, indexer)

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
        services, interval = self.services, self.services.settings.poll_interval
        me = services.chain.signer.lower()
        while not self.stop_event.is_set():
            try:
                services.indexer.sync_once()
                with services.db.session() as session:
                    active = [t.task_id for t in _tasks_to_run(session) if t.coordinator.lower() == me]
                for task_id in active:
                    name = f"task-{task_id}"
                    if name not in self._threads or not self._threads[name].is_alive():
                        log.info("orchestrating task %s", task_id)
                        run = functools.partial(services.orchestrator(task_id).run, poll_interval=interval)
                        self._spawn(name, run, self.stop_event)
            except FedmarketError as exc:  # the chain or the store is down: say so, try again
                log.warning("supervisor: %s; retrying", exc)
            except Exception:  # a bug must not stop the indexer: log it whole and retry
                log.exception("supervisor: unexpected error; retrying")
            self.stop_event.wait(interval)


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

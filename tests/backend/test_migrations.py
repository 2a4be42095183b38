"""The database's migrations: head is exactly the models' schema, and 0003 (validators) upgrades a
0002 database, emptying its chain index for the indexer to rebuild, and downgrades again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from backend.db import MIGRATIONS_DIR, Base, Database


def run(url: str, action, revision: str) -> None:
    """An Alembic command on `url`, the way `Database.migrate` runs one."""
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)
    engine.dispose()


def test_the_migrated_schema_is_the_models_schema(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.migrate()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.dispose()
    assert differences == []


def test_0003_upgrades_a_0002_database_and_downgrades_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    run(url, command.upgrade, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO cursors (name, block_number) VALUES ('market', 41)"))
        connection.execute(
            text(
                "INSERT INTO tasks (task_id, owner, coordinator, spec_cid, terms, status, created_tx, "
                "created_block, current_round, has_validation_data) "
                "VALUES (1, '0x1', '0x2', 'bafkrei', '{}', 'open', '0x3', 1, 0, 1)"
            )
        )
        connection.execute(
            text("INSERT INTO earnings (task_id, trainer, cumulative, claimed) VALUES (1, '0x1', '5', '0')")
        )
    engine.dispose()

    run(url, command.upgrade, "head")
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"validators", "round_validators"} <= tables
    assert not {"settlements", "used_signatures"} & tables
    with engine.connect() as connection:
        # The old index is gone: the indexer reads the chain again from the deployment block.
        for table in ("cursors", "tasks", "earnings"):
            assert connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0
    columns = {c["name"] for c in inspect(engine).get_columns("submissions")}
    assert {"outcome", "consensus", "num_samples"} <= columns and "accepted" not in columns
    engine.dispose()

    run(url, command.downgrade, "0002")
    engine = create_engine(url)
    assert {"settlements", "used_signatures"} <= set(inspect(engine).get_table_names())
    assert "has_validation_data" in {c["name"] for c in inspect(engine).get_columns("tasks")}
    engine.dispose()
    run(url, command.upgrade, "head")

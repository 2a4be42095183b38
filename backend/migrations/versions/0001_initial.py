"""Initial schema: event index, tasks, rounds, submissions, earnings, settlements, signatures.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

HASH = sa.String(66)
CID = sa.String(80)
AMOUNT = sa.String(80)
ADDRESS = sa.String(42)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("block_number", sa.Integer, primary_key=True),
        sa.Column("log_index", sa.Integer, primary_key=True),
        sa.Column("tx_hash", HASH, nullable=False),
        sa.Column("name", sa.String(64), nullable=False, index=True),
        sa.Column("task_id", sa.Integer, nullable=True, index=True),
        sa.Column("args", sa.JSON, nullable=False),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("block_number", sa.Integer, nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("owner", ADDRESS, nullable=False, index=True),
        sa.Column("coordinator", ADDRESS, nullable=False),
        sa.Column("spec_cid", CID, nullable=False),
        sa.Column("terms", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("created_tx", HASH, nullable=False),
        sa.Column("created_block", sa.Integer, nullable=False),
        sa.Column("current_round", sa.Integer, nullable=False),
        sa.Column("model_cid", CID, nullable=True),
        sa.Column("refund", AMOUNT, nullable=True),
        sa.Column("has_validation_data", sa.Boolean, nullable=False),
    )
    op.create_table(
        "rounds",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_cid", CID, nullable=False),
        sa.Column("commit_deadline", sa.Integer, nullable=False),
        sa.Column("reveal_deadline", sa.Integer, nullable=False),
        sa.Column("started_tx", HASH, nullable=False),
        sa.Column("closed_tx", HASH, nullable=True),
        sa.Column("new_model_cid", CID, nullable=True),
        sa.Column("report_cid", CID, nullable=True),
        sa.Column("rewards_root", HASH, nullable=True),
        sa.Column("payout", AMOUNT, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=True),
    )
    op.create_table(
        "submissions",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("trainer", ADDRESS, primary_key=True),
        sa.Column("commitment", HASH, nullable=False),
        sa.Column("committed_tx", HASH, nullable=False),
        sa.Column("update_hash", HASH, nullable=True),
        sa.Column("update_cid", CID, nullable=True),
        sa.Column("revealed_tx", HASH, nullable=True),
        sa.Column("accepted", sa.Boolean, nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("payout", AMOUNT, nullable=True),
        sa.Column("slashed", AMOUNT, nullable=True),
    )
    op.create_table(
        "earnings",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("trainer", ADDRESS, primary_key=True),
        sa.Column("cumulative", AMOUNT, nullable=False),
        sa.Column("claimed", AMOUNT, nullable=False),
    )
    op.create_table(
        "settlements",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("tx_hash", HASH, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "used_signatures",
        sa.Column("signature_hash", HASH, primary_key=True),
        sa.Column("task_id", sa.Integer, nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "used_signatures",
        "settlements",
        "earnings",
        "submissions",
        "rounds",
        "tasks",
        "cursors",
        "events",
    ):
        op.drop_table(table)

"""Validators: the contract settles rounds from the validators' revealed scores.

Adds `validators` and `round_validators`; rounds get the score deadlines, when they closed, the
trainers' and validators' payouts, what was burned and the publication (`ModelPublished`);
submissions get the contract's outcome and consensus value instead of the coordinator's verdict
(`accepted`, `reason`, `score`); earnings are per account, as trainer and as validator, instead
of a cumulative Merkle leaf. Drops what the coordinator no longer decides or holds: the owners'
validation data (`tasks.has_validation_data`, `used_signatures`), its own settlements
(`settlements`), rewards roots and round metrics.

Every projection changed meaning, so the chain index is emptied and the indexer reads the chain
again from the deployment block (the index is rebuilt from events alone; see ``backend.db``).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HASH = sa.String(66)
CID = sa.String(80)
AMOUNT = sa.String(80)
ADDRESS = sa.String(42)

# Children first: nothing references anything, but this order reads as the index's dependencies.
CHAIN_INDEX = ("earnings", "submissions", "rounds", "tasks", "events", "cursors")


def upgrade() -> None:
    for table in CHAIN_INDEX:
        op.execute(sa.text(f"DELETE FROM {table}"))
    op.drop_table("settlements")
    op.drop_table("used_signatures")

    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("has_validation_data")
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("rewards_root")
        batch.drop_column("metrics")
        batch.add_column(sa.Column("score_commit_deadline", sa.Integer, nullable=True))
        batch.add_column(sa.Column("score_reveal_deadline", sa.Integer, nullable=True))
        batch.add_column(sa.Column("closed_at", sa.Integer, nullable=True))
        batch.add_column(sa.Column("trainer_payout", AMOUNT, nullable=True))
        batch.add_column(sa.Column("validator_payout", AMOUNT, nullable=True))
        batch.add_column(sa.Column("burned", AMOUNT, nullable=True))
        batch.add_column(sa.Column("published_tx", HASH, nullable=True))
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("accepted")
        batch.drop_column("reason")
        batch.drop_column("score")
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("consensus", AMOUNT, nullable=True))
        batch.add_column(sa.Column("num_samples", sa.Integer, nullable=True))
    # The key changes (trainer -> account): a new table rather than a rename in place.
    op.drop_table("earnings")
    op.create_table(
        "earnings",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("account", ADDRESS, primary_key=True),
        sa.Column("as_trainer", AMOUNT, nullable=False),
        sa.Column("as_validator", AMOUNT, nullable=False),
        sa.Column("claimed", AMOUNT, nullable=False),
    )
    op.create_table(
        "validators",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("validator", ADDRESS, primary_key=True),
        sa.Column("stake", AMOUNT, nullable=False),
        sa.Column("data_hash", HASH, nullable=False),
        sa.Column("joined", sa.Boolean, nullable=False),
        sa.Column("joined_tx", HASH, nullable=False),
        sa.Column("joined_block", sa.Integer, nullable=False),
    )
    op.create_table(
        "round_validators",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("validator", ADDRESS, primary_key=True),
        sa.Column("commitment", HASH, nullable=False),
        sa.Column("committed_tx", HASH, nullable=False),
        sa.Column("revealed_tx", HASH, nullable=True),
        sa.Column("scores", sa.JSON, nullable=True),
        sa.Column("agreement", AMOUNT, nullable=True),
        sa.Column("payout", AMOUNT, nullable=True),
        sa.Column("slashed", AMOUNT, nullable=True),
    )


def downgrade() -> None:
    """Back to 0002's schema, with the chain index emptied (the old projections cannot be made
    from the new events: the coordinator of 0002 must index its own contract again)."""
    op.drop_table("round_validators")
    op.drop_table("validators")
    for table in CHAIN_INDEX:
        if table != "earnings":
            op.execute(sa.text(f"DELETE FROM {table}"))
    op.drop_table("earnings")
    op.create_table(
        "earnings",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("trainer", ADDRESS, primary_key=True),
        sa.Column("cumulative", AMOUNT, nullable=False),
        sa.Column("claimed", AMOUNT, nullable=False),
    )
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("num_samples")
        batch.drop_column("consensus")
        batch.drop_column("outcome")
        batch.add_column(sa.Column("accepted", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("reason", sa.String(200), nullable=True))
        batch.add_column(sa.Column("score", sa.Float, nullable=True))
    with op.batch_alter_table("rounds") as batch:
        for column in (
            "published_tx", "burned", "validator_payout", "trainer_payout", "closed_at",
            "score_reveal_deadline", "score_commit_deadline",
        ):  # fmt: skip
            batch.drop_column(column)
        batch.add_column(sa.Column("rewards_root", HASH, nullable=True))
        batch.add_column(sa.Column("metrics", sa.JSON, nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("has_validation_data", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "settlements",
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
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

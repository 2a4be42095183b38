"""Drop settlements.kind: every recorded settlement is a finalizeRound (aborts are decided
from the chain alone and never recorded).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("settlements") as batch:
        batch.drop_column("kind")


def downgrade() -> None:
    with op.batch_alter_table("settlements") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="finalize"))

"""Create the messages table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE messages (
            id           bigint      PRIMARY KEY,
            sender_id    integer     NOT NULL,
            recipient_id integer     NOT NULL,
            channel      text        NOT NULL,
            body         text        NOT NULL,
            created_at   timestamptz NOT NULL,
            is_read      boolean     NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE messages")

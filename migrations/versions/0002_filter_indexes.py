"""Indexes for the filters that are selective enough to pay for one.

``sender_id`` and ``recipient_id`` pick about 1 row in 10,000: ``(column, id)`` serves the
filter and the ``id`` order at once. ``created_at`` ranges use their own index. ``channel``
and ``is_read`` keep a quarter and a third of the rows: a scan in primary-key order is
cheaper than an index there, so they get none.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX messages_sender_id_id ON messages (sender_id, id)")
    op.execute("CREATE INDEX messages_recipient_id_id ON messages (recipient_id, id)")
    op.execute("CREATE INDEX messages_created_at ON messages (created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX messages_created_at")
    op.execute("DROP INDEX messages_recipient_id_id")
    op.execute("DROP INDEX messages_sender_id_id")

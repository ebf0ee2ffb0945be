"""batched ingest (issue 11): a heartbeat's idempotency key

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 22:40:00

A heartbeat is named by its device, boot counter and uptime (docs/protocol.md, `tele`). Copies stored
before this revision (a QoS 1 resend, or a redelivery after a commit but before the PUBACK) are removed,
keeping the first, so that the unique index can be made.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "DELETE FROM heartbeats WHERE id NOT IN "
            "(SELECT MIN(id) FROM heartbeats GROUP BY device_id, boot, up)"
        )
    )
    op.create_index("uq_heartbeats_device_boot_up", "heartbeats", ["device_id", "boot", "up"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_heartbeats_device_boot_up", table_name="heartbeats")

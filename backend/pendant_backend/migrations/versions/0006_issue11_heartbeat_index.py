"""heartbeat history (issue 11): one index fewer to write per heartbeat

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:00:00

`ix_heartbeats_device_id` is the leading column of two other indexes (`uq_heartbeats_device_boot_up`,
`ix_heartbeats_device_id_received_at`), which answer every look-up by device as well; each heartbeat
stored wrote it for nothing.
"""

from __future__ import annotations

import sqlmodel  # noqa: F401
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_heartbeats_device_id", table_name="heartbeats")


def downgrade() -> None:
    op.create_index("ix_heartbeats_device_id", "heartbeats", ["device_id"])

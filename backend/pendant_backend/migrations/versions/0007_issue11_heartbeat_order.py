"""heartbeat order across ingest workers (issue 11): the newest heartbeat a device row took

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 09:10:00

Two workers on a shared subscription may store one pendant's heartbeats in the other order than it sent
them. `devices.heartbeat_up` is the `up` of the newest heartbeat of the row's `boot` taken so far: an older
one is stored in the history but does not put the row's boot, firmware and config revision back.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("heartbeat_up", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("heartbeat_up")

"""supervision profiles (issue 12): the interval in force after a change of heartbeat_s

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:20:00

A change of a pendant's heartbeat interval (its supervision profile) takes effect from its next
heartbeat, which it sends on the timer of the old interval. `devices.heartbeat_prev_s` keeps the interval
before the change and `devices.heartbeat_since_rev` the config revision that brought the new one: until
a heartbeat reports that revision the late and offline thresholds follow the old interval. Devices
upgraded here have had no change since: both stay null, and their config's interval is in force.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("heartbeat_prev_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat_since_rev", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("heartbeat_since_rev")
        batch.drop_column("heartbeat_prev_s")

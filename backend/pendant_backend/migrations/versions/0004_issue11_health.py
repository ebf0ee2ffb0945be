"""incremental fleet health (issue 11)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 22:40:00

Each device gets the moment its health can next change with nothing new arriving (`health_due_at`,
indexed, so that the rules look at the devices due instead of the whole fleet), and its battery level and
flags in columns beside `connectivity`, so that the fleet summary counts from one index. Existing devices
take their battery and flags from their stored `health`, and are all due at once: the first pass after
the upgrade classifies each of them and sets its real moment.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# pendant_backend.health.FLAGS at this revision (bit i of health_flags is FLAGS[i]), and RECHECK.
FLAGS = (
    "charging",
    "weak_signal",
    "gnss_stale",
    "outbox_backlog",
    "firmware_drift",
    "config_drift",
    "test_overdue",
    "renewal_due",
)
RECHECK = datetime(1970, 1, 1, tzinfo=UTC)


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "battery",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="unknown",
            )
        )
        batch_op.add_column(sa.Column("health_flags", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("health_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_devices_health_due_at"), ["health_due_at"], unique=False)
        batch_op.create_index(
            "ix_devices_fleet_counts",
            ["loan_state", "revoked_at", "recall", "connectivity", "battery", "health_flags"],
            unique=False,
        )
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.create_index(
            "ix_heartbeats_device_id_received_at", ["device_id", "received_at"], unique=False
        )
    _fill_in()


def _fill_in() -> None:
    devices = sa.table(
        "devices",
        sa.column("device_id", sa.String()),
        sa.column("health", sa.JSON()),
        sa.column("battery", sa.String()),
        sa.column("health_flags", sa.Integer()),
        sa.column("health_due_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    connection.execute(devices.update().values(health_due_at=RECHECK))
    rows = connection.execute(
        sa.select(devices.c.device_id, devices.c.health).where(devices.c.health.is_not(None))
    ).all()
    for device_id, stored in rows:
        if not isinstance(stored, dict):
            continue
        bits = sum(1 << bit for bit, flag in enumerate(FLAGS) if stored.get(flag) == "yes")
        connection.execute(
            devices.update()
            .where(devices.c.device_id == device_id)
            .values(battery=str(stored.get("battery", "unknown"))[:16], health_flags=bits)
        )


def downgrade() -> None:
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.drop_index("ix_heartbeats_device_id_received_at")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_fleet_counts")
        batch_op.drop_index(batch_op.f("ix_devices_health_due_at"))
        batch_op.drop_column("health_due_at")
        batch_op.drop_column("health_flags")
        batch_op.drop_column("battery")

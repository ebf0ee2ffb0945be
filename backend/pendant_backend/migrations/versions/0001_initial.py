"""registry, alarms, audit chain, health, config, notifications

Revision ID: 0001
Revises:
Create Date: 2026-11-29 09:01:54.108898
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("alarm_pk", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("hash"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_alarm_pk"), ["alarm_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_kind"), ["kind"], unique=False)

    op.create_table(
        "config_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "version", name="uq_config_documents_scope_version"),
    )
    with op.batch_alter_table("config_documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_config_documents_scope"), ["scope"], unique=False)

    op.create_table(
        "devices",
        sa.Column("imei", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("iccid", sqlmodel.sql.sqltypes.AutoString(length=22), nullable=True),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("hardware_rev", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("firmware_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("case_ref", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("loan_state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("provisioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renewal_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recall", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fix_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_alarm_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("sess", sa.Integer(), nullable=True),
        sa.Column("boot", sa.Integer(), nullable=True),
        sa.Column("fw", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("config_rev", sa.Integer(), nullable=False),
        sa.Column("config_doc", sa.JSON(), nullable=True),
        sa.Column("config_applied_rev", sa.Integer(), nullable=True),
        sa.Column("config_error", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("connectivity", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("health", sa.JSON(), nullable=True),
        sa.Column("health_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
        sa.UniqueConstraint("iccid"),
        sa.UniqueConstraint("imei"),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_connectivity"), ["connectivity"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_loan_state"), ["loan_state"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_device_id"), ["device_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_notifications_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "outbound",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("retain", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbound_sent_at"), ["sent_at"], unique=False)

    op.create_table(
        "alarms",
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("alarm_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("device_time", sa.BigInteger(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("acc", sa.Integer(), nullable=True),
        sa.Column("loc_time", sa.BigInteger(), nullable=True),
        sa.Column("loc_src", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("cell", sa.JSON(), nullable=True),
        sa.Column("batt", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("id_collision", sa.Boolean(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("resolution", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("last_escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resends", sa.Integer(), nullable=False),
        sa.Column("payload", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "alarm_id", "occurrence", name="uq_alarms_device_alarm_occurrence"),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarms_received_at"), ["received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarms_state"), ["state"], unique=False)

    op.create_table(
        "bench_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bench_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bench_reports_device_id"), ["device_id"], unique=False)

    op.create_table(
        "health_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("aspect", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("old", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("new", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("health_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_health_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_health_events_device_id"), ["device_id"], unique=False)

    op.create_table(
        "heartbeats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device_time", sa.BigInteger(), nullable=True),
        sa.Column("boot", sa.Integer(), nullable=False),
        sa.Column("up", sa.Integer(), nullable=False),
        sa.Column("batt", sa.Integer(), nullable=True),
        sa.Column("mv", sa.Integer(), nullable=True),
        sa.Column("chg", sa.Boolean(), nullable=False),
        sa.Column("rssi", sa.Integer(), nullable=True),
        sa.Column("reg", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("rat", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("acc", sa.Integer(), nullable=True),
        sa.Column("loc_time", sa.BigInteger(), nullable=True),
        sa.Column("fw", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("cfg", sa.Integer(), nullable=False),
        sa.Column("out", sa.Integer(), nullable=False),
        sa.Column("heap", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_heartbeats_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_heartbeats_received_at"), ["received_at"], unique=False)

    op.create_table(
        "alarm_locations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_pk", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("acc", sa.Integer(), nullable=False),
        sa.Column("loc_time", sa.BigInteger(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["alarm_pk"],
            ["alarms.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alarm_locations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_locations_alarm_pk"), ["alarm_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_locations_received_at"), ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alarm_locations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_locations_received_at"))
        batch_op.drop_index(batch_op.f("ix_alarm_locations_alarm_pk"))

    op.drop_table("alarm_locations")
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_heartbeats_received_at"))
        batch_op.drop_index(batch_op.f("ix_heartbeats_device_id"))

    op.drop_table("heartbeats")
    with op.batch_alter_table("health_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_health_events_device_id"))
        batch_op.drop_index(batch_op.f("ix_health_events_at"))

    op.drop_table("health_events")
    with op.batch_alter_table("bench_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bench_reports_device_id"))

    op.drop_table("bench_reports")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_state"))
        batch_op.drop_index(batch_op.f("ix_alarms_received_at"))
        batch_op.drop_index(batch_op.f("ix_alarms_device_id"))

    op.drop_table("alarms")
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_sent_at"))

    op.drop_table("outbound")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_notifications_device_id"))

    op.drop_table("notifications")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_loan_state"))
        batch_op.drop_index(batch_op.f("ix_devices_connectivity"))

    op.drop_table("devices")
    with op.batch_alter_table("config_documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_config_documents_scope"))

    op.drop_table("config_documents")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_kind"))
        batch_op.drop_index(batch_op.f("ix_audit_events_device_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_alarm_pk"))

    op.drop_table("audit_events")
    op.drop_table("api_tokens")

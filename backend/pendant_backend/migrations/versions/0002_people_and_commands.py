"""accounts, sessions, commands, service beats, fallback, issue overrides

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 06:01:23.427872

Tokens made before accounts existed keep working only once given an account: the API refuses a token
without one.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "service_beats",
        sa.Column("instance", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("broker_connected", sa.Boolean(), nullable=False),
        sa.Column("webhook_configured", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("instance"),
    )
    with op.batch_alter_table("service_beats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_service_beats_beat_at"), ["beat_at"], unique=False)

    op.create_table(
        "commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("command_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("cmd", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("args", sa.JSON(), nullable=True),
        sa.Column("alarm_pk", sa.Integer(), nullable=True),
        sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("err", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("command_id"),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commands_alarm_pk"), ["alarm_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_device_id"), ["device_id"], unique=False)

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_web_sessions_expires_at"), ["expires_at"], unique=False)

    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fallback", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("fallback_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_tokens_account_id"), ["account_id"], unique=False)
        batch_op.create_foreign_key("fk_api_tokens_account_id", "accounts", ["account_id"], ["id"])

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issued_without", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("issued_without")

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint("fk_api_tokens_account_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_tokens_account_id"))
        batch_op.drop_column("account_id")

    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("fallback_at")
        batch_op.drop_column("fallback")

    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_web_sessions_account_id"))

    op.drop_table("web_sessions")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_device_id"))
        batch_op.drop_index(batch_op.f("ix_commands_alarm_pk"))

    op.drop_table("commands")
    with op.batch_alter_table("service_beats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_beats_beat_at"))

    op.drop_table("service_beats")
    op.drop_table("accounts")

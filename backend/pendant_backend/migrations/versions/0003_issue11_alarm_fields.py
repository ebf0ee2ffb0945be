"""alarm fields set aside (issue 11)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 22:40:00

An alarm with a field that breaks the protocol is stored with that field set aside and flagged, instead
of being rejected whole. Alarms stored before this revision had nothing set aside: the flags start false.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FLAGS = (
    "location_invalid",
    "location_time_invalid",
    "cell_invalid",
    "time_invalid",
    "battery_invalid",
    "kind_invalid",
    "test_flag_invalid",
)


def upgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        for flag in FLAGS:
            batch_op.add_column(sa.Column(flag, sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        for flag in reversed(FLAGS):
            batch_op.drop_column(flag)

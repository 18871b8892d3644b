"""analytics: rollups, device days, site rules, terms history, erasures

Revision ID: 0005
Revises: 0004

Events stored before this revision are not in the rollups: ingest adds only the events it
stores from now on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_hash", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_by", sa.String(length=120), nullable=False),
        sa.Column("removed", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("erasures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_erasures_device_hash"), ["device_hash"], unique=False)

    op.create_table(
        "site_days",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "day", "device_id"),
    )
    with op.batch_alter_table("site_days", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_days_day"), ["day"], unique=False)
        batch_op.create_index(batch_op.f("ix_site_days_device_id"), ["device_id"], unique=False)

    op.create_table(
        "site_devices",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "device_id"),
    )
    with op.batch_alter_table("site_devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_devices_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_site_devices_last_day"), ["last_day"], unique=False)

    op.create_table(
        "site_hours",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("visitors", sa.BigInteger(), nullable=False),
        sa.Column("new_visitors", sa.BigInteger(), nullable=False),
        sa.Column("returning_visitors", sa.BigInteger(), nullable=False),
        sa.Column("stays", sa.BigInteger(), nullable=False),
        sa.Column("passers_by", sa.BigInteger(), nullable=False),
        sa.Column("dwell_under_5m", sa.BigInteger(), nullable=False),
        sa.Column("dwell_5_15m", sa.BigInteger(), nullable=False),
        sa.Column("dwell_15_30m", sa.BigInteger(), nullable=False),
        sa.Column("dwell_30_60m", sa.BigInteger(), nullable=False),
        sa.Column("dwell_over_60m", sa.BigInteger(), nullable=False),
        sa.Column("dwell_seconds", sa.Float(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("sessions_ended", sa.BigInteger(), nullable=False),
        sa.Column("session_bytes", sa.BigInteger(), nullable=False),
        sa.Column("session_seconds", sa.Float(), nullable=False),
        sa.Column("terms_accepted", sa.BigInteger(), nullable=False),
        sa.Column("portal_views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "day", "hour"),
    )
    with op.batch_alter_table("site_hours", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_hours_day"), ["day"], unique=False)

    op.create_table(
        "site_terms",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("terms_version", sa.String(length=32), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("acceptances", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "terms_version"),
    )
    op.create_table(
        "site_analytics",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.Float(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("passer_by_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("site_id", "valid_from"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_to_device",
            ["to_device"],
            unique=False,
            postgresql_where=sa.text("to_device != ''"),
            sqlite_where=sa.text("to_device != ''"),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_events_to_device",
            postgresql_where=sa.text("to_device != ''"),
            sqlite_where=sa.text("to_device != ''"),
        )

    op.drop_table("site_analytics")
    op.drop_table("site_terms")
    with op.batch_alter_table("site_hours", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_site_hours_day"))

    op.drop_table("site_hours")
    with op.batch_alter_table("site_devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_site_devices_last_day"))
        batch_op.drop_index(batch_op.f("ix_site_devices_device_id"))

    op.drop_table("site_devices")
    with op.batch_alter_table("site_days", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_site_days_device_id"))
        batch_op.drop_index(batch_op.f("ix_site_days_day"))

    op.drop_table("site_days")
    with op.batch_alter_table("erasures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_erasures_device_hash"))

    op.drop_table("erasures")

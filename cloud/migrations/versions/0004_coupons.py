"""coupons: root keys, issuer keys, campaigns, partnerships, slices, ledger, redemptions

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NOW = sa.text("(CURRENT_TIMESTAMP)")


def _add_root_keys() -> None:
    with op.batch_alter_table("alliances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("coupon_key", sa.LargeBinary(length=32), nullable=True))
    connection = op.get_bind()
    alliances = sa.table("alliances", sa.column("id"), sa.column("coupon_key"))
    for (alliance_id,) in connection.execute(sa.select(alliances.c.id)).all():
        connection.execute(
            alliances.update()
            .where(alliances.c.id == alliance_id)
            .values(coupon_key=os.urandom(32))
        )
    with op.batch_alter_table("alliances", schema=None) as batch_op:
        batch_op.alter_column("coupon_key", existing_type=sa.LargeBinary(32), nullable=False)


def upgrade() -> None:
    _add_root_keys()
    with op.batch_alter_table("merchants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staff_pin", sa.String(length=160), nullable=True))
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("coupons", sa.Text(), server_default=sa.text("''"), nullable=False)
        )
    with op.batch_alter_table("events", schema=None) as batch_op:
        for name in ("coupon_id", "replaces", "to_device"):
            batch_op.add_column(
                sa.Column(name, sa.String(length=32), server_default=sa.text("''"), nullable=False)
            )
        batch_op.add_column(
            sa.Column("campaign_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_events_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("title_en", sa.String(length=120), nullable=False),
        sa.Column("title_zh", sa.String(length=120), nullable=False),
        sa.Column("terms_en", sa.Text(), nullable=False),
        sa.Column("terms_zh", sa.Text(), nullable=False),
        sa.Column("image", sa.String(length=255), nullable=False),
        sa.Column("starts_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("per_device", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("nth_visit", sa.Integer(), nullable=False),
        sa.Column("reach", sa.String(length=16), nullable=False),
        sa.Column("coupon_days", sa.Integer(), nullable=False),
        sa.Column("slice_size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_campaigns_merchant_id", "campaigns", ["merchant_id"])
    op.create_table(
        "partnerships",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.ForeignKeyConstraint(["partner_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("merchant_id", "partner_id", name="uq_partnership"),
    )
    op.create_index("ix_partnerships_merchant_id", "partnerships", ["merchant_id"])
    op.create_index("ix_partnerships_partner_id", "partnerships", ["partner_id"])
    op.create_table(
        "coupon_slices",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("router_id", sa.String(length=63), nullable=False),
        sa.Column("allotted", sa.Integer(), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.ForeignKeyConstraint(["router_id"], ["routers.id"]),
        sa.PrimaryKeyConstraint("campaign_id", "router_id"),
    )
    op.create_table(
        "issuer_keys",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("router_id", sa.String(length=63), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["router_id"], ["routers.id"]),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("ix_issuer_keys_router_id", "issuer_keys", ["router_id"])
    op.create_table(
        "coupons",
        sa.Column("coupon_id", sa.String(length=32), nullable=False),
        sa.Column("short_code", sa.String(length=10), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("alliance_id", sa.Integer(), nullable=False),
        sa.Column("issuer_router_id", sa.String(length=63), nullable=False),
        sa.Column("issuer_site_id", sa.Integer(), nullable=True),
        sa.Column("issuer_merchant_id", sa.Integer(), nullable=True),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("redeemed_at", sa.Float(), nullable=True),
        sa.Column("replaces", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("coupon_id"),
    )
    for name in ("short_code", "campaign_id", "alliance_id", "device_id"):
        op.create_index(f"ix_coupons_{name}", "coupons", [name])
    op.create_table(
        "redemptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("coupon_id", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=True),
        sa.Column("router_id", sa.String(length=63), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("origin_router", sa.String(length=63), nullable=True),
        sa.Column("origin_boot", sa.String(length=64), nullable=True),
        sa.Column("origin_seq", sa.BigInteger(), nullable=True),
        sa.Column("double_spend", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "origin_router", "origin_boot", "origin_seq", name="uq_redemption_origin"
        ),
    )
    op.create_index("ix_redemptions_coupon_id", "redemptions", ["coupon_id"])
    op.create_index("ix_redemptions_campaign_id", "redemptions", ["campaign_id"])


def downgrade() -> None:
    for table in (
        "redemptions",
        "coupons",
        "issuer_keys",
        "coupon_slices",
        "partnerships",
        "campaigns",
    ):
        op.drop_table(table)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_campaign_id"))
        for name in ("coupon_id", "replaces", "to_device", "campaign_id"):
            batch_op.drop_column(name)
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_column("coupons")
    with op.batch_alter_table("merchants", schema=None) as batch_op:
        batch_op.drop_column("staff_pin")
    with op.batch_alter_table("alliances", schema=None) as batch_op:
        batch_op.drop_column("coupon_key")

"""Inbound policy: Sieve scripts, vacation and duplicate memory, greylisting,
and DMARC records for aggregate reports.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACCOUNT = dict(ondelete="CASCADE")


def upgrade():
    op.create_table(
        "sieve_scripts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", **ACCOUNT), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("notified", sa.String(64)),
        sa.UniqueConstraint("account_id", "name", name="sieve_scripts_name"),
    )
    op.create_table(
        "sieve_replies",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", **ACCOUNT), primary_key=True),
        sa.Column("handle", sa.String(64), primary_key=True),
        sa.Column("sender", sa.String(320), primary_key=True),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "sieve_duplicates",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", **ACCOUNT), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "greylist",
        sa.Column("network", sa.String(64), primary_key=True),
        sa.Column("sender", sa.String(320), primary_key=True),
        sa.Column("recipient", sa.String(320), primary_key=True),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("passed", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index("greylist_seen", "greylist", ["last_seen"])
    op.create_table(
        "greylist_allowed",
        sa.Column("network", sa.String(64), primary_key=True),
        sa.Column("passes", sa.Integer, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "dmarc_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("rua", sa.Text, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=False),
        sa.Column("header_from", sa.String(255), nullable=False),
        sa.Column("envelope_from", sa.String(255), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("dkim", sa.String(16), nullable=False),
        sa.Column("spf", sa.String(16), nullable=False),
        sa.Column("results", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_index("dmarc_records_domain", "dmarc_records", ["policy_domain", "created"])


def downgrade():
    for name in ("dmarc_records", "greylist_allowed", "greylist", "sieve_duplicates",
                 "sieve_replies", "sieve_scripts"):
        op.drop_table(name)

"""The outbound queue (``storage.outbound``): messages, their recipients'
states, the suppression list and hold rules.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "outbound",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="SET NULL")),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("spool", sa.String(64)),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("release_at", sa.Float, nullable=False),
        sa.Column("held", sa.Boolean, nullable=False),
        sa.Column("ret", sa.String(4)),
        sa.Column("envid", sa.String(100)),
        sa.Column("requiretls", sa.Boolean, nullable=False),
        sa.Column("smtputf8", sa.Boolean, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("submission_id", sa.Integer),
    )
    op.create_index("outbound_account", "outbound", ["account_id", "created"])
    op.create_table(
        "outbound_rcpts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("outbound.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("orcpt", sa.String(500)),
        sa.Column("notify", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.Float, nullable=False),
        sa.Column("last_attempt", sa.Float),
        sa.Column("reply", sa.Text),
        sa.Column("remote", sa.String(255)),
        sa.Column("delay_notified", sa.Boolean, nullable=False),
        sa.Column("lease", sa.Float),
    )
    op.create_index("outbound_rcpts_due", "outbound_rcpts", ["state", "next_attempt"])
    op.create_index("outbound_rcpts_message", "outbound_rcpts", ["message_id"])
    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float),
    )
    op.create_table(
        "hold_rules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE")),
        sa.Column("domain", sa.String(255)),
        sa.Column("created", sa.Float, nullable=False),
    )


def downgrade():
    for name in ("hold_rules", "suppressions"):
        op.drop_table(name)
    op.drop_index("outbound_rcpts_message", table_name="outbound_rcpts")
    op.drop_index("outbound_rcpts_due", table_name="outbound_rcpts")
    op.drop_table("outbound_rcpts")
    op.drop_index("outbound_account", table_name="outbound")
    op.drop_table("outbound")

"""IMAP completeness and POP3: subscriptions by name, \\Recent, ACL grants,
METADATA entries, message-count quotas, leases and server state.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ACCOUNT = dict(ondelete="CASCADE")


def upgrade():
    op.create_table(
        "subscriptions",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", **ACCOUNT), primary_key=True),
        sa.Column("name", sa.String(1024), primary_key=True),
    )
    op.execute("INSERT INTO subscriptions (account_id, name) "
               "SELECT account_id, name FROM mailboxes WHERE subscribed")
    op.add_column("mailboxes", sa.Column("recent_uid", sa.BigInteger, nullable=False,
                                         server_default="0"))
    op.execute("UPDATE mailboxes SET recent_uid = uidnext - 1")
    op.create_table(
        "acl",
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("grantee", sa.String(320), primary_key=True),
        sa.Column("rights", sa.String(32), nullable=False),
    )
    op.create_index("acl_grantee", "acl", ["grantee"])
    op.create_table(
        "metadata_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", **ACCOUNT), nullable=False),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE")),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )
    op.create_index("metadata_entries_owner", "metadata_entries", ["account_id", "mailbox_id"])
    op.add_column("accounts", sa.Column("quota_messages", sa.BigInteger))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "server_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade():
    for name in ("server_state", "leases", "metadata_entries", "acl", "subscriptions"):
        op.drop_table(name)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("quota_messages")
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("recent_uid")

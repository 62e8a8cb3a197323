"""The file operations log (``storage.blobops``): what a committed copy, move,
expunge or folder change still owes the blob store, finished by recovery.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "file_ops",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("txn", sa.String(64), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("account", sa.String(640), nullable=False),
        sa.Column("folder", sa.String(2048), nullable=False),
        sa.Column("stem", sa.String(255)),
        sa.Column("bits", sa.Integer, nullable=False),
        sa.Column("dst_folder", sa.String(2048)),
        sa.Column("dst_bits", sa.Integer, nullable=False),
    )
    op.create_index("file_ops_txn", "file_ops", ["txn"])


def downgrade():
    op.drop_index("file_ops_txn", table_name="file_ops")
    op.drop_table("file_ops")

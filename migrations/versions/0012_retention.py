"""retention: what an archived payment leaves behind so that it stays unique

Revision ID: 0012_retention
Revises: 0011_counters
Create Date: 2026-12-07

`db_manager.py archive` moves closed payments, with their logs, transfers and events, to a file and deletes them.
What must stay unique after them stays here: `archived_orders` keeps each archived payment's order_id (a create
with it answers 409 `archived`, never a new payment), `archived_transfers` each of its transfers' (transaction
hash, log index) (the watcher seeing it listed again never credits it twice). `db_manager.py restore` deletes the
tombstones of what it brings back.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012_retention'
down_revision = '0011_counters'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'archived_orders',
        sa.Column('order_id', sa.String(length=128), nullable=False),
        sa.Column('payment_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('archived_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('order_id'),
    )
    op.create_table(
        'archived_transfers',
        sa.Column('transaction_hash', sa.String(length=64), nullable=False),
        sa.Column('log_index', sa.Integer(), nullable=False),
        sa.Column('payment_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('archived_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('transaction_hash', 'log_index'),
    )
    op.create_index('ix_archived_transfers_payment_id', 'archived_transfers', ['payment_id'])


def downgrade() -> None:
    op.drop_index('ix_archived_transfers_payment_id', table_name='archived_transfers')
    op.drop_table('archived_transfers')
    op.drop_table('archived_orders')

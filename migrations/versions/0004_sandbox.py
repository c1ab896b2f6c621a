"""sandbox network: the sandbox chain's transfers, and the webhooks its built-in receiver took in

Revision ID: 0004_sandbox
Revises: 0003
Create Date: 2026-12-04

With TRON_NETWORK=sandbox every process serves the same simulated chain from the database: its schedule lives in
service_state ('sandbox_chain'), its transfers here.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004_sandbox'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sandbox_transfers',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('transaction_hash', sa.String(length=64), nullable=False),
        sa.Column('from_address', sa.String(length=34), nullable=False),
        sa.Column('to_address', sa.String(length=34), nullable=False),
        sa.Column('contract', sa.String(length=34), nullable=False),
        sa.Column('amount_usdt', sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column('reverted', sa.Boolean(), nullable=False),
        sa.Column('ref_block', sa.BigInteger(), nullable=False),
        sa.Column('ref_timestamp', sa.BigInteger(), nullable=False),
        sa.Column('sent_at_ms', sa.BigInteger(), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('transaction_hash'),
    )
    op.create_index(op.f('ix_sandbox_transfers_block_number'), 'sandbox_transfers', ['block_number'], unique=False)
    op.create_table(
        'sandbox_inbox',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('webhook_id', sa.String(length=64), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('payment_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('webhook_timestamp', sa.BigInteger(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_sandbox_inbox_payment_id'), 'sandbox_inbox', ['payment_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_sandbox_inbox_payment_id'), table_name='sandbox_inbox')
    op.drop_table('sandbox_inbox')
    op.drop_index(op.f('ix_sandbox_transfers_block_number'), table_name='sandbox_transfers')
    op.drop_table('sandbox_transfers')

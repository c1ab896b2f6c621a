"""chain reads: cursors per chain, transfers found by reconciliation, rejected transfers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Wallet cursors gain the chain they were read from (network and token contract). Cursors written
before this revision were not recorded with theirs: they get the chain '' that no configuration
uses, so every wallet is read again from its oldest open payment (never a loss, only a re-read).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('wallet_cursors', sa.Column('chain', sa.String(length=80), server_default='', nullable=False))
    op.alter_column('wallet_cursors', 'chain', server_default=None)
    op.drop_constraint('wallet_cursors_pkey', 'wallet_cursors', type_='primary')
    op.create_primary_key('wallet_cursors_pkey', 'wallet_cursors', ['chain', 'wallet_address'])
    # Block cursors and accepted heads in service_state were not keyed by chain either: drop them.
    op.execute("DELETE FROM service_state WHERE key IN ('block_cursor', 'watcher_strategy')")
    op.add_column('transfers', sa.Column('found_by', sa.String(length=16), server_default='scan', nullable=False))
    op.create_table(
        'rejected_transfers',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('transaction_hash', sa.String(length=64), nullable=False),
        sa.Column('log_index', sa.Integer(), nullable=False),
        sa.Column('to_address', sa.String(length=34), nullable=True),
        sa.Column('amount_raw', sa.Text(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=True),
        sa.Column('block_timestamp', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('transaction_hash', 'log_index', name='uq_rejected_transfers_tx_log'),
    )
    op.create_index(op.f('ix_rejected_transfers_to_address'), 'rejected_transfers', ['to_address'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_rejected_transfers_to_address'), table_name='rejected_transfers')
    op.drop_table('rejected_transfers')
    op.drop_column('transfers', 'found_by')
    # One cursor per wallet again: keep the one of the greatest chain key, drop the others.
    op.execute("DELETE FROM wallet_cursors a USING wallet_cursors b "
               "WHERE a.wallet_address = b.wallet_address AND a.chain < b.chain")
    op.drop_constraint('wallet_cursors_pkey', 'wallet_cursors', type_='primary')
    op.drop_column('wallet_cursors', 'chain')
    op.create_primary_key('wallet_cursors_pkey', 'wallet_cursors', ['wallet_address'])

"""money seen above the solid head; records set aside as unreadable; superseded detections

Revision ID: 0008_unconfirmed_money
Revises: 0007_unmatched_reasons
Create Date: 2026-12-07

`unconfirmed_transfers` lists USDT transfers seen in blocks that are not solidified yet, each on the payment the
matching rules would give it to (`payment.detected`); a row is cleared when its transfer is credited, when its block
is replaced, or when the chain was read past it without it. A transfer whose listing record or receipt stays
unreadable is kept in `transfers` with the status `set_aside` (what is known of it: no log index or block number
yet). A `payment.detected` event still pending when a later event of its payment is written becomes `superseded`.
Pending payments are indexed by expiry alone too: the blocks strategy expires across every wallet each cycle.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008_unconfirmed_money'
down_revision = '0007_unmatched_reasons'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New enum values may be added in a transaction (PostgreSQL 12+), not used in it.
    op.execute("ALTER TYPE event_state ADD VALUE IF NOT EXISTS 'superseded'")
    op.execute("ALTER TYPE transfer_status ADD VALUE IF NOT EXISTS 'set_aside'")
    op.create_table(
        'unconfirmed_transfers',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('transaction_hash', sa.String(length=64), nullable=False),
        sa.Column('log_index', sa.Integer(), nullable=False),
        sa.Column('payment_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('from_address', sa.String(length=34), nullable=False),
        sa.Column('to_address', sa.String(length=34), nullable=False),
        sa.Column('amount_usdt', sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=False),
        sa.Column('block_id', sa.String(length=64), nullable=False),
        sa.Column('block_timestamp', sa.BigInteger(), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cleared_reason', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('transaction_hash', 'log_index', name='uq_unconfirmed_tx_log'),
    )
    op.create_index('ix_unconfirmed_open_payment', 'unconfirmed_transfers', ['payment_id'], unique=False,
                    postgresql_where=sa.text('cleared_at IS NULL'))
    op.create_index('ix_unconfirmed_open_block', 'unconfirmed_transfers', ['block_number'], unique=False,
                    postgresql_where=sa.text('cleared_at IS NULL'))
    for name in ('log_index', 'from_address', 'amount_usdt', 'block_number'):
        op.alter_column('transfers', name, nullable=True)
    op.create_index('uq_transfers_set_aside', 'transfers', ['transaction_hash', 'to_address'], unique=True,
                    postgresql_where=sa.text('log_index IS NULL'))
    op.create_index('ix_payments_pending_expiry', 'payments', ['expires_at'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index('ix_payments_pending_expiry', table_name='payments')
    op.drop_index('uq_transfers_set_aside', table_name='transfers')
    op.execute("DELETE FROM transfers WHERE status = 'set_aside'")
    for name in ('log_index', 'from_address', 'amount_usdt', 'block_number'):
        op.alter_column('transfers', name, nullable=False)
    op.drop_index('ix_unconfirmed_open_block', table_name='unconfirmed_transfers')
    op.drop_index('ix_unconfirmed_open_payment', table_name='unconfirmed_transfers')
    op.drop_table('unconfirmed_transfers')
    op.execute("UPDATE webhook_events SET state = 'delivered' WHERE state = 'superseded'")
    # PostgreSQL cannot drop an enum value: 'superseded' and 'set_aside' stay in their types, unused.

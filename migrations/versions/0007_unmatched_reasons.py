"""why a transfer is unmatched; a wallet's payments by remaining amount

Revision ID: 0007_unmatched_reasons
Revises: 0006_account_events
Create Date: 2026-12-07

Transfers say why they are unmatched (`no_candidate`, `ambiguous`, `no_exact_match`; NULL for those
stored before, whose reason was not recorded). Payments are indexed by wallet and remaining amount, so
matching and the amount check read only the payments that await an amount, and pending ones by wallet and
expiry, so what a credit expires first is found without reading the wallet's others, and by wallet and
creation, for an unmatched transfer's newest open payments. Account-level events
are no longer one ordered queue: the index of that queue goes.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_unmatched_reasons'
down_revision = '0006_account_events'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('transfers', sa.Column('reason', sa.String(length=32), nullable=True))
    op.create_index('ix_payments_wallet_remaining', 'payments',
                    ['wallet_address', sa.text('(expected_amount_usdt - received_amount_usdt)')], unique=False)
    op.create_index('ix_payments_wallet_created', 'payments', ['wallet_address', 'created_at'], unique=False)
    op.create_index('ix_payments_wallet_pending_expiry', 'payments', ['wallet_address', 'expires_at'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('ix_webhook_events_pending_stream', table_name='webhook_events')


def downgrade() -> None:
    op.create_index('ix_webhook_events_pending_stream', 'webhook_events', ['stream', 'seq'], unique=False,
                    postgresql_where=sa.text("state = 'pending' AND stream IS NOT NULL"))
    op.drop_index('ix_payments_wallet_pending_expiry', table_name='payments')
    op.drop_index('ix_payments_wallet_created', table_name='payments')
    op.drop_index('ix_payments_wallet_remaining', table_name='payments')
    op.drop_column('transfers', 'reason')

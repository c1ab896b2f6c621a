"""drop the wallet_address index that the (wallet_address, status) index covers

Revision ID: 0007_wallet_index
Revises: 0006_account_events
Create Date: 2026-12-04

Every lookup by wallet uses `ix_payments_wallet_status`, whose first column is the wallet: the single-column
index only cost every payment written one more index entry.
"""
from __future__ import annotations

from alembic import op

revision = '0007_wallet_index'
down_revision = '0006_account_events'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_payments_wallet_address', table_name='payments')


def downgrade() -> None:
    op.create_index('ix_payments_wallet_address', 'payments', ['wallet_address'], unique=False)

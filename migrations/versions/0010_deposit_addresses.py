"""deposit addresses derived from the merchant's account xpub

Revision ID: 0010_deposit_addresses
Revises: 0009_fiat_rates
Create Date: 2026-12-07

A payment created without wallet_address, when DEPOSIT_XPUB is set, gets the address of the next index of the key's
account: `deposit_accounts` holds each account's next index (one row per key, named by a hash of the key), taken in
the creating transaction; `deposit_addresses` lists the addresses taken, each with its payment (or none: skipped
because a given wallet_address already used it); `payments.address_index` is the index a payment's address has.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010_deposit_addresses'
down_revision = '0009_fiat_rates'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'deposit_accounts',
        sa.Column('account', sa.String(length=64), nullable=False),
        sa.Column('next_index', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('account'),
    )
    op.create_table(
        'deposit_addresses',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('account', sa.String(length=64), nullable=False),
        sa.Column('address_index', sa.Integer(), nullable=False),
        sa.Column('address', sa.String(length=34), nullable=False),
        sa.Column('payment_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('address'),
        sa.UniqueConstraint('payment_id'),
        sa.UniqueConstraint('account', 'address_index', name='uq_deposit_addresses_account_index'),
    )
    op.add_column('payments', sa.Column('address_index', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('payments', 'address_index')
    op.drop_table('deposit_addresses')
    op.drop_table('deposit_accounts')

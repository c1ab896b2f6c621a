"""prices in fiat: the rate locked on a payment, the sources' quotes, the currencies asked for

Revision ID: 0009_fiat_rates
Revises: 0008_unconfirmed_money
Create Date: 2026-12-07

A payment priced in a fiat currency keeps its price and the rate that made its USDT amount (`price_amount`,
`price_currency`, `rate`, `rate_source`, `rate_at`; NULL for one given in USDT). `rate_quotes` holds each
source's latest quote per currency, `rate_sources` each source's schedule (the next fetch, claimed by one
process at a time; a rate limit's pause) and record, `rate_currencies` the currencies requests asked for and
whether each is in an outage (announced once).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_fiat_rates'
down_revision = '0008_unconfirmed_money'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('payments', sa.Column('price_amount', sa.Numeric(20, 6), nullable=True))
    op.add_column('payments', sa.Column('price_currency', sa.String(length=3), nullable=True))
    op.add_column('payments', sa.Column('rate', sa.Numeric(30, 12), nullable=True))
    op.add_column('payments', sa.Column('rate_source', sa.String(length=64), nullable=True))
    op.add_column('payments', sa.Column('rate_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'rate_quotes',
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('rate', sa.Numeric(30, 12), nullable=False),
        sa.Column('quoted_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('source', 'currency'),
    )
    op.create_table(
        'rate_sources',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('next_fetch_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('errors', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'rate_currencies',
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('last_asked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('unavailable_since', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('currency'),
    )


def downgrade() -> None:
    op.drop_table('rate_currencies')
    op.drop_table('rate_sources')
    op.drop_table('rate_quotes')
    for name in ('rate_at', 'rate_source', 'rate', 'price_currency', 'price_amount'):
        op.drop_column('payments', name)

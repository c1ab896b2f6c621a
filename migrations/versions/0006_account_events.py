"""account-level events and underpayment tolerance

Revision ID: 0006_account_events
Revises: 0005_checkout
Create Date: 2026-12-04

Outbox events need not belong to a payment: account-level events (`transfer.unmatched`,
`transfer.assigned`) and test webhooks have no payment. Account-level events form one ordered
stream (`stream = 'account'`), as a payment's events do; an event written while no target was
configured has no URL and the state `no_target`. Payments gain their underpayment tolerance.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_account_events'
down_revision = '0005_checkout'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF NOT EXISTS: a downgrade keeps the value (PostgreSQL cannot drop one), so upgrading again works.
    op.execute("ALTER TYPE event_state ADD VALUE IF NOT EXISTS 'no_target'")
    op.alter_column('webhook_events', 'payment_id', existing_type=sa.UUID(), nullable=True)
    op.alter_column('webhook_events', 'callback_url', existing_type=sa.Text(), nullable=True)
    op.add_column('webhook_events', sa.Column('stream', sa.String(length=16), nullable=True))
    op.create_index(
        'ix_webhook_events_pending_stream',
        'webhook_events',
        ['stream', 'seq'],
        unique=False,
        postgresql_where=sa.text("state = 'pending' AND stream IS NOT NULL"),
    )
    op.add_column(
        'payments',
        sa.Column('underpayment_tolerance_usdt', sa.Numeric(precision=20, scale=6), server_default='0',
                  nullable=False),
    )


def downgrade() -> None:
    op.drop_column('payments', 'underpayment_tolerance_usdt')
    op.drop_index('ix_webhook_events_pending_stream', table_name='webhook_events')
    op.drop_column('webhook_events', 'stream')
    # Events without a payment or a target cannot exist in the older schema.
    op.execute("DELETE FROM webhook_events WHERE payment_id IS NULL OR callback_url IS NULL")
    op.alter_column('webhook_events', 'callback_url', existing_type=sa.Text(), nullable=False)
    op.alter_column('webhook_events', 'payment_id', existing_type=sa.UUID(), nullable=False)

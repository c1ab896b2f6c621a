"""operator notifications: their outbox

Revision ID: 0011_notifications
Revises: 0010_deposit_addresses
Create Date: 2026-12-07

`notifications` holds one row per event and NOTIFY_URLS target, written in the transaction of the event it reports
and delivered through Apprise on its own schedule (notify/). The target is named by the SHA-256 of its URL and its
scheme, never the URL. The state reuses the webhook outbox's `event_state` type (pending, delivered, failed).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011_notifications'
down_revision = '0010_deposit_addresses'
branch_labels = None
depends_on = None

EVENT_STATE = postgresql.ENUM(name='event_state', create_type=False)


def upgrade() -> None:
    op.create_table(
        'notifications',
        sa.Column('seq', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('event_type', sa.String(length=32), nullable=False),
        sa.Column('payment_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('target', sa.String(length=64), nullable=False),
        sa.Column('scheme', sa.String(length=32), nullable=False),
        sa.Column('title', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('state', EVENT_STATE, nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('leased_by', sa.String(length=64), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('seq'),
        sa.UniqueConstraint('id'),
    )
    op.create_index('ix_notifications_due', 'notifications', ['state', 'next_attempt_at'])
    op.create_index(op.f('ix_notifications_payment_id'), 'notifications', ['payment_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_notifications_payment_id'), table_name='notifications')
    op.drop_index('ix_notifications_due', table_name='notifications')
    op.drop_table('notifications')

"""webhook delivery: schedule position and the per-payment pending index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

`schedule_position` counts the attempts of the current retry schedule; `attempts` stays the
total. A manual retry (`POST /payments/<id>/callback/retry`) resets the position only.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        'webhook_events',
        sa.Column('schedule_position', sa.Integer(), server_default='0', nullable=False),
    )
    # Events already part-way through their schedule keep their place in it.
    op.execute("UPDATE webhook_events SET schedule_position = attempts")
    op.create_index(
        'ix_webhook_events_pending_payment',
        'webhook_events',
        ['payment_id', 'seq'],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index('ix_webhook_events_pending_payment', table_name='webhook_events')
    op.drop_column('webhook_events', 'schedule_position')

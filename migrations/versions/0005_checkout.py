"""checkout page: the payer's return URL and the lookup of checkout tokens

Revision ID: 0005_checkout
Revises: 0004_sandbox
Create Date: 2026-12-04

A payment's checkout token is an HMAC of its id under a key of its own (service_state 'checkout_key'); the row
keeps only the token's SHA-256, so the page finds the payment by an index lookup and a copy of the database
holds no usable link. Payments made before this revision get theirs here, under the key made here.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_checkout'
down_revision = '0004_sandbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from ledger.checkout import CHECKOUT_KEY, new_checkout_key, token_hash

    op.add_column('payments', sa.Column('return_url', sa.Text(), nullable=True))
    op.add_column('payments', sa.Column('checkout_token_hash', sa.String(length=64), nullable=True))
    op.create_index('ix_payments_checkout_token_hash', 'payments', ['checkout_token_hash'], unique=True)
    bind = op.get_bind()
    bind.execute(sa.text("INSERT INTO service_state (key, value) VALUES (:key, to_jsonb(CAST(:value AS text))) "
                         "ON CONFLICT (key) DO NOTHING"), {"key": CHECKOUT_KEY, "value": new_checkout_key()})
    key = bind.execute(sa.text("SELECT value #>> '{}' FROM service_state WHERE key = :key"),
                       {"key": CHECKOUT_KEY}).scalar_one()
    ids = bind.execute(sa.text("SELECT id FROM payments WHERE checkout_token_hash IS NULL")).scalars().all()
    for payment_id in ids:
        bind.execute(sa.text("UPDATE payments SET checkout_token_hash = :h WHERE id = :id"),
                     {"h": token_hash(key, payment_id), "id": payment_id})


def downgrade() -> None:
    op.drop_index('ix_payments_checkout_token_hash', table_name='payments')
    op.drop_column('payments', 'checkout_token_hash')
    op.drop_column('payments', 'return_url')
    op.execute("DELETE FROM service_state WHERE key = 'checkout_key'")

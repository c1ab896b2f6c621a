"""operator notifications: their outbox

Revision ID: 0013_notifications
Revises: 0012_retention
Create Date: 2026-12-07

`notifications` holds one row per event and NOTIFY_URLS target, written in the transaction of the event it reports
and delivered through Apprise on its own schedule (notify/). The target is named by the SHA-256 of its URL and its
scheme, never the URL. The state reuses the webhook outbox's `event_state` type (pending, delivered, failed).

Their count by state is kept in `row_counts` (migration 0011) under `notifications:<state>`, by the same kind of
statement triggers, and `row_counts_recount()` is made again to count them too.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013_notifications'
down_revision = '0012_retention'
branch_labels = None
depends_on = None

EVENT_STATE = postgresql.ENUM(name='event_state', create_type=False)

# migration 0011's keys of each counted table, with this table's added (row_counts_recount() counts them all)
COUNTED = {
    'payments': "('payments:' || r.status::text), "
                "(CASE WHEN r.failure_reason = 'cancelled' THEN 'payments:cancelled' END)",
    'transfers': "('transfers:' || r.status::text || ':' || r.found_by)",
    'webhook_events': "('webhook_events:' || r.state::text)",
    'rejected_transfers': "('rejected_transfers:' || CASE WHEN r.reason LIKE 'a zero amount%' THEN 'zero_amount' "
                          "WHEN r.reason LIKE 'an amount of%' THEN 'amount_too_large' "
                          "WHEN r.reason LIKE 'malformed%' THEN 'malformed_log' ELSE 'other' END)",
    'notifications': "('notifications:' || r.state::text)",
}


def keyed(keys: str, rows: str, delta: int) -> str:
    return f"SELECT v.key, {delta} AS d FROM {rows} r CROSS JOIN LATERAL (VALUES {keys}) v(key) WHERE v.key IS NOT NULL"


def add_deltas(select: str) -> str:
    return ("INSERT INTO row_counts AS c (key, shard, n) "
            f"SELECT key, pg_backend_pid(), sum(d) FROM ({select}) deltas GROUP BY key HAVING sum(d) <> 0 "
            "ORDER BY key ON CONFLICT (key, shard) DO UPDATE SET n = c.n + excluded.n;")


def count_notifications() -> str:
    keys = COUNTED['notifications']
    inserted, deleted = keyed(keys, 'new_rows', 1), keyed(keys, 'old_rows', -1)
    return f"""
CREATE OR REPLACE FUNCTION row_counts_notifications() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {add_deltas(inserted)}
    ELSIF TG_OP = 'DELETE' THEN
        {add_deltas(deleted)}
    ELSIF TG_OP = 'UPDATE' THEN
        {add_deltas(f'{inserted} UNION ALL {deleted}')}
    ELSE  -- TRUNCATE
        DELETE FROM row_counts WHERE key LIKE 'notifications:%';
    END IF;
    RETURN NULL;
END $$"""


def recount_function(counted: dict[str, str]) -> str:
    counts = " UNION ALL ".join(keyed(keys, table, 1) for table, keys in counted.items())
    return f"""
CREATE OR REPLACE FUNCTION row_counts_recount() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE {', '.join(counted)} IN SHARE MODE;
    DELETE FROM row_counts;
    INSERT INTO row_counts (key, shard, n) SELECT key, 0, sum(d) FROM ({counts}) counted GROUP BY key;
END $$"""


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
    op.execute(count_notifications())
    op.execute('CREATE TRIGGER notifications_counted_insert AFTER INSERT ON notifications '
               'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_notifications()')
    op.execute('CREATE TRIGGER notifications_counted_update AFTER UPDATE ON notifications '
               'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT '
               'EXECUTE FUNCTION row_counts_notifications()')
    op.execute('CREATE TRIGGER notifications_counted_delete AFTER DELETE ON notifications '
               'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_notifications()')
    op.execute('CREATE TRIGGER notifications_counted_truncate AFTER TRUNCATE ON notifications '
               'FOR EACH STATEMENT EXECUTE FUNCTION row_counts_notifications()')
    op.execute(recount_function(COUNTED))


def downgrade() -> None:
    op.execute(recount_function({table: keys for table, keys in COUNTED.items() if table != 'notifications'}))
    op.execute("DELETE FROM row_counts WHERE key LIKE 'notifications:%'")
    op.drop_index(op.f('ix_notifications_payment_id'), table_name='notifications')
    op.drop_index('ix_notifications_due', table_name='notifications')
    op.drop_table('notifications')
    op.execute('DROP FUNCTION row_counts_notifications()')

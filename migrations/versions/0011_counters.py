"""row counts kept by triggers; list indexes that end in the page's sort key

Revision ID: 0011_counters
Revises: 0010_deposit_addresses
Create Date: 2026-12-07

/health, /stats and /metrics counted payments, transfers and webhook events by status on every request: a scan
that grows with the tables. `row_counts` holds those counts instead, kept by statement-level triggers (with
transition tables: one upsert per statement and key, whatever the number of rows) in the same transaction as the
change they count, so they are exact under every path that writes (the API, the watcher, the CLI, archive and
restore, COPY, a plain DELETE). A statement adds its deltas to the rows of its own backend (`shard` =
`pg_backend_pid()`): no two open transactions ever update the same row, so creates never queue on a counter and
no lock order between counters can deadlock. Readers sum the shards; `row_counts_compact()` folds the shards into
shard 0, skipping the rows an open transaction holds. `row_counts_recount()` recounts from the tables (this
migration's fill; also after a load with triggers off).

The keys (one home: the functions below):
  payments:<status>, payments:cancelled (failed with failure_reason 'cancelled'),
  transfers:<status>:<found_by>, webhook_events:<state>,
  rejected_transfers:<kind> (zero_amount, amount_too_large, malformed_log, other: by how the reason starts).

The list indexes of payments end in the page's sort key (created_at, id), so a page, first or deep, of any filter
of GET /payments reads only its rows: `ix_payments_created_at`, `ix_payments_status`, `ix_payments_wallet_created`,
`ix_payments_wallet_status` keep their names and gain the sort key (no index added). A partial index on the pending
events' creation time gives the outbox's oldest pending event without reading the others; partial indexes of the
closed payments by when they closed let the watched wallets' read skip the history before the late window.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_counters'
down_revision = '0010_deposit_addresses'
branch_labels = None
depends_on = None

# Each counted table: the SQL of the keys one of its rows (alias r) counts under, as a VALUES list of one-column
# rows (a NULL key counts nothing). An UPDATE's trigger sees every updated row (PostgreSQL allows no column list
# with transition tables); a row whose keys stay the same adds nothing.
COUNTED = {
    'payments': "('payments:' || r.status::text), "
                "(CASE WHEN r.failure_reason = 'cancelled' THEN 'payments:cancelled' END)",
    'transfers': "('transfers:' || r.status::text || ':' || r.found_by)",
    'webhook_events': "('webhook_events:' || r.state::text)",
    'rejected_transfers': "('rejected_transfers:' || CASE WHEN r.reason LIKE 'a zero amount%' THEN 'zero_amount' "
                          "WHEN r.reason LIKE 'an amount of%' THEN 'amount_too_large' "
                          "WHEN r.reason LIKE 'malformed%' THEN 'malformed_log' ELSE 'other' END)",
}

# Closed payments by when they closed: the watched wallets' read skips the history closed before the late window.
CLOSED_INDEXES = (
    ('ix_payments_expired_at', 'expires_at', "status = 'expired'"),
    ('ix_payments_cancelled_at', 'cancelled_at', "status = 'failed' AND failure_reason = 'cancelled'"),
    ('ix_payments_completed_at', 'completed_at', "status = 'completed'"),
)


def keyed(keys: str, rows: str, delta: int) -> str:
    return f"SELECT v.key, {delta} AS d FROM {rows} r CROSS JOIN LATERAL (VALUES {keys}) v(key) WHERE v.key IS NOT NULL"


def add_deltas(select: str) -> str:
    """The statement adding a set of (key, d) rows to this backend's shard; keys in order, zeros skipped."""
    return ("INSERT INTO row_counts AS c (key, shard, n) "
            f"SELECT key, pg_backend_pid(), sum(d) FROM ({select}) deltas GROUP BY key HAVING sum(d) <> 0 "
            "ORDER BY key ON CONFLICT (key, shard) DO UPDATE SET n = c.n + excluded.n;")


def count_function(table: str, keys: str) -> str:
    inserted, deleted = keyed(keys, 'new_rows', 1), keyed(keys, 'old_rows', -1)
    return f"""
CREATE OR REPLACE FUNCTION row_counts_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {add_deltas(inserted)}
    ELSIF TG_OP = 'DELETE' THEN
        {add_deltas(deleted)}
    ELSIF TG_OP = 'UPDATE' THEN
        {add_deltas(f'{inserted} UNION ALL {deleted}')}
    ELSE  -- TRUNCATE
        DELETE FROM row_counts WHERE key LIKE '{table}:%';
    END IF;
    RETURN NULL;
END $$"""


def recount_function() -> str:
    counts = " UNION ALL ".join(keyed(keys, table, 1) for table, keys in COUNTED.items())
    return f"""
CREATE OR REPLACE FUNCTION row_counts_recount() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE {', '.join(COUNTED)} IN SHARE MODE;  -- writers wait: the counts are of one moment
    DELETE FROM row_counts;
    INSERT INTO row_counts (key, shard, n) SELECT key, 0, sum(d) FROM ({counts}) counted GROUP BY key;
END $$"""


COMPACT = """
CREATE OR REPLACE FUNCTION row_counts_compact() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('row_counts_compact')) THEN
        RETURN 0;  -- another compaction runs: shard 0 is its own
    END IF;
    WITH gone AS (
        DELETE FROM row_counts WHERE (key, shard) IN (
            SELECT key, shard FROM row_counts WHERE shard <> 0 FOR UPDATE SKIP LOCKED)
        RETURNING key, n
    ), summed AS (
        INSERT INTO row_counts AS c (key, shard, n) SELECT key, 0, sum(n) FROM gone GROUP BY key ORDER BY key
        ON CONFLICT (key, shard) DO UPDATE SET n = c.n + excluded.n RETURNING 1
    )
    SELECT count(*) INTO folded FROM gone;
    RETURN folded;
END $$"""


def upgrade() -> None:
    op.create_table(
        'row_counts',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('shard', sa.Integer(), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('key', 'shard'),
    )
    for table, keys in COUNTED.items():
        op.execute(count_function(table, keys))
        function = f'row_counts_{table}()'
        op.execute(f'CREATE TRIGGER {table}_counted_insert AFTER INSERT ON {table} '
                   f'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}')
        op.execute(f'CREATE TRIGGER {table}_counted_update AFTER UPDATE ON {table} '
                   f'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT '
                   f'EXECUTE FUNCTION {function}')
        op.execute(f'CREATE TRIGGER {table}_counted_delete AFTER DELETE ON {table} '
                   f'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}')
        op.execute(f'CREATE TRIGGER {table}_counted_truncate AFTER TRUNCATE ON {table} '
                   f'FOR EACH STATEMENT EXECUTE FUNCTION {function}')
    op.execute(recount_function())
    op.execute(COMPACT)
    op.execute('SELECT row_counts_recount()')

    op.drop_index('ix_payments_created_at', table_name='payments')
    op.create_index('ix_payments_created_at', 'payments', ['created_at', 'id'])
    op.drop_index('ix_payments_status', table_name='payments')
    op.create_index('ix_payments_status', 'payments', ['status', 'created_at', 'id'])
    op.drop_index('ix_payments_wallet_created', table_name='payments')
    op.create_index('ix_payments_wallet_created', 'payments', ['wallet_address', 'created_at', 'id'])
    op.drop_index('ix_payments_wallet_status', table_name='payments')
    op.create_index('ix_payments_wallet_status', 'payments', ['wallet_address', 'status', 'created_at', 'id'])
    op.create_index('ix_webhook_events_pending_created', 'webhook_events', ['created_at'],
                    postgresql_where=sa.text("state = 'pending'"))
    for name, column, where in CLOSED_INDEXES:
        op.create_index(name, 'payments', [column], postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, _, _ in CLOSED_INDEXES:
        op.drop_index(name, table_name='payments')
    op.drop_index('ix_webhook_events_pending_created', table_name='webhook_events')
    for name, columns in (('ix_payments_wallet_status', ['wallet_address', 'status']),
                          ('ix_payments_wallet_created', ['wallet_address', 'created_at']),
                          ('ix_payments_status', ['status']), ('ix_payments_created_at', ['created_at'])):
        op.drop_index(name, table_name='payments')
        op.create_index(name, 'payments', columns)
    for table in COUNTED:
        for event in ('insert', 'update', 'delete', 'truncate'):
            op.execute(f'DROP TRIGGER {table}_counted_{event} ON {table}')
        op.execute(f'DROP FUNCTION row_counts_{table}()')
    op.execute('DROP FUNCTION row_counts_recount()')
    op.execute('DROP FUNCTION row_counts_compact()')
    op.drop_table('row_counts')

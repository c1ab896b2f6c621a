"""the operator's dashboard: admin accounts, their sessions, failed logins, and per-day totals

Revision ID: 0014_console
Revises: 0013_notifications
Create Date: 2026-12-07

`admins` holds each operator's Argon2 password hash and TOTP secret; `admin_sessions` the server-side sessions (a
cookie carries a random token, the row only its SHA-256), so logout and deleting an admin end them at once;
`login_failures` the failed logins of the last minutes, counted per name and per address by every process.
`daily_totals` holds, per UTC day, the payments created and the USDT credited, kept by triggers on `payments` and
`transfers` in the writing transaction, so the dashboard's 30-day chart reads a few rows a day whatever the table
sizes. Like `row_counts` (migration 0011), each backend adds to rows of its own (`shard` = its pid), so concurrent
creates never queue on one day's row; `daily_totals_compact()` folds the shards of the days before today into shard
0, skipping rows an open transaction holds.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_console'
down_revision = '0013_notifications'
branch_labels = None
depends_on = None

# A payment counts on the UTC day of its creation; a credited transfer's amount on the UTC day of its block. The
# triggers run once per statement over its transition tables: a bulk load (COPY) adds one row per day, not one
# upsert per row.
TRIGGERS = """
CREATE OR REPLACE FUNCTION daily_totals_apply(changes jsonb) RETURNS void AS $$
BEGIN
    INSERT INTO daily_totals AS t (day, shard, payments_created, usdt_credited)
    SELECT (c->>'day')::date, pg_backend_pid(), (c->>'payments')::bigint, (c->>'usdt')::numeric
    FROM jsonb_array_elements(changes) c
    ORDER BY 1
    ON CONFLICT (day, shard) DO UPDATE SET payments_created = t.payments_created + EXCLUDED.payments_created,
                                    usdt_credited = t.usdt_credited + EXCLUDED.usdt_credited;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION daily_totals_payments() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM daily_totals_apply(coalesce((SELECT jsonb_agg(jsonb_build_object('day', day, 'payments', n, 'usdt', 0))
            FROM (SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM new_rows GROUP BY 1) d),
            '[]'));
    ELSE
        PERFORM daily_totals_apply(coalesce((SELECT jsonb_agg(jsonb_build_object('day', day, 'payments', -n, 'usdt', 0))
            FROM (SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM old_rows GROUP BY 1) d),
            '[]'));
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION daily_totals_transfers() RETURNS trigger AS $$
DECLARE
    changes jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_object('day', day, 'payments', 0, 'usdt', usdt)) INTO changes FROM (
            SELECT (to_timestamp(block_timestamp / 1000.0) AT TIME ZONE 'UTC')::date AS day, sum(amount_usdt) AS usdt
            FROM new_rows WHERE status = 'credited' AND amount_usdt IS NOT NULL GROUP BY 1) d;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_object('day', day, 'payments', 0, 'usdt', -usdt)) INTO changes FROM (
            SELECT (to_timestamp(block_timestamp / 1000.0) AT TIME ZONE 'UTC')::date AS day, sum(amount_usdt) AS usdt
            FROM old_rows WHERE status = 'credited' AND amount_usdt IS NOT NULL GROUP BY 1) d;
    ELSE
        SELECT jsonb_agg(jsonb_build_object('day', day, 'payments', 0, 'usdt', usdt)) INTO changes FROM (
            SELECT day, sum(usdt) AS usdt FROM (
                SELECT (to_timestamp(block_timestamp / 1000.0) AT TIME ZONE 'UTC')::date AS day, amount_usdt AS usdt
                FROM new_rows WHERE status = 'credited' AND amount_usdt IS NOT NULL
                UNION ALL
                SELECT (to_timestamp(block_timestamp / 1000.0) AT TIME ZONE 'UTC')::date, -amount_usdt
                FROM old_rows WHERE status = 'credited' AND amount_usdt IS NOT NULL) both_sides
            GROUP BY day HAVING sum(usdt) <> 0) d;
    END IF;
    IF changes IS NOT NULL THEN
        PERFORM daily_totals_apply(changes);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION daily_totals_compact() RETURNS bigint AS $$
DECLARE
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('daily_totals_compact')) THEN
        RETURN 0;  -- another compaction runs: shard 0 is its own
    END IF;
    WITH gone AS (
        DELETE FROM daily_totals WHERE (day, shard) IN (
            SELECT day, shard FROM daily_totals
            WHERE shard <> 0 AND day < (now() AT TIME ZONE 'UTC')::date FOR UPDATE SKIP LOCKED)
        RETURNING day, payments_created, usdt_credited
    ), summed AS (
        INSERT INTO daily_totals AS t (day, shard, payments_created, usdt_credited)
        SELECT day, 0, sum(payments_created), sum(usdt_credited) FROM gone GROUP BY day ORDER BY day
        ON CONFLICT (day, shard) DO UPDATE SET payments_created = t.payments_created + EXCLUDED.payments_created,
                                               usdt_credited = t.usdt_credited + EXCLUDED.usdt_credited
        RETURNING 1
    )
    SELECT count(*) INTO folded FROM gone;
    RETURN folded;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER daily_totals_payments_insert AFTER INSERT ON payments REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION daily_totals_payments();
CREATE TRIGGER daily_totals_payments_delete AFTER DELETE ON payments REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION daily_totals_payments();
CREATE TRIGGER daily_totals_transfers_insert AFTER INSERT ON transfers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION daily_totals_transfers();
CREATE TRIGGER daily_totals_transfers_update AFTER UPDATE ON transfers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION daily_totals_transfers();
CREATE TRIGGER daily_totals_transfers_delete AFTER DELETE ON transfers REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION daily_totals_transfers();
"""

BACKFILL = """
INSERT INTO daily_totals (day, shard, payments_created, usdt_credited)
SELECT day, 0, sum(payments), sum(usdt) FROM (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS payments, 0 AS usdt FROM payments GROUP BY 1
    UNION ALL
    SELECT (to_timestamp(block_timestamp / 1000.0) AT TIME ZONE 'UTC')::date, 0, sum(amount_usdt) FROM transfers
    WHERE status = 'credited' AND amount_usdt IS NOT NULL GROUP BY 1
) parts GROUP BY day
"""


def upgrade() -> None:
    op.create_table(
        'admins',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('password_hash', sa.Text(), nullable=False),
        sa.Column('totp_secret', sa.String(length=64), nullable=True),
        sa.Column('totp_enabled', sa.Boolean(), server_default='false', nullable=False),
        sa.Column('totp_last_step', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'admin_sessions',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('admin_id', sa.Integer(), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('verified', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['admin_id'], ['admins.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('token_hash'),
    )
    op.create_index('ix_admin_sessions_admin_id', 'admin_sessions', ['admin_id'])
    op.create_table(
        'login_failures',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=False),
        sa.Column('failed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_login_failures_name', 'login_failures', ['name', 'failed_at'])
    op.create_index('ix_login_failures_address', 'login_failures', ['address', 'failed_at'])
    op.create_table(
        'daily_totals',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('shard', sa.Integer(), nullable=False),
        sa.Column('payments_created', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('usdt_credited', sa.Numeric(precision=20, scale=6), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('day', 'shard'),
    )
    op.execute(BACKFILL)
    op.execute(TRIGGERS)


def downgrade() -> None:
    for table, events in (("payments", ("insert", "delete")), ("transfers", ("insert", "update", "delete"))):
        for event in events:
            op.execute(f"DROP TRIGGER IF EXISTS daily_totals_{table}_{event} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS daily_totals_transfers(), daily_totals_payments(), daily_totals_apply(jsonb), "
               "daily_totals_compact()")
    op.drop_table('daily_totals')
    op.drop_table('login_failures')
    op.drop_table('admin_sessions')
    op.drop_table('admins')

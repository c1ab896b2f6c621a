"""Taking an account's next deposit index, in the creating transaction.

The count is one row per account key (`deposit_accounts`), raised by an upsert: the row stays locked until the
transaction ends, so concurrent creates, in any number of processes, take consecutive indexes one after another, and
a create that fails (or a process that dies before its COMMIT) gives its index back with the rollback: an index is
never given twice, and none is lost. A PostgreSQL SEQUENCE would not hold creates up, but it is not transactional:
every failed create, and every crash (a sequence logs 32 values ahead), would leave unused indexes, and a wallet
stops looking after 20 unused addresses in a row (the gap limit). Creates on one wallet address already wait for
each other the same way (the wallet's lock), and the lock is held for two round trips.
"""
from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, String, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Dialect

from database import DriverStatement, driver_execute, driver_statement
from models import DepositAccount, DepositAddress, Payment


def take_statement() -> Any:
    """The account's next index, taken (parameter `account`): the first create of an account gets 0."""
    one = literal_column("1")  # written in the SQL: the statement is sent as the prefix of another
    upsert = insert(DepositAccount).values(account=bindparam("account", type_=String), next_index=one)
    return upsert.on_conflict_do_update(
        index_elements=[DepositAccount.account],
        set_={"next_index": DepositAccount.next_index + one, "updated_at": func.now()},
    )


@functools.lru_cache(maxsize=4)
def take_then_read_sql(dialect: Dialect) -> DriverStatement:
    """The transaction's start, the index taken, then, read once the account's row is ours (a snapshot of its own,
    under READ COMMITTED): the transaction's time, whether a payment with `order_id` exists by now (a twin that
    committed while this one waited), and the index taken. One message."""
    taken = select(Payment.id).where(Payment.order_id == bindparam("order_id", type_=String)).exists()
    index = (select(DepositAccount.next_index - 1)
             .where(DepositAccount.account == bindparam("account", type_=String)).scalar_subquery())
    read = select(func.now(), taken, index)
    upsert = take_statement().compile(dialect=dialect)
    return driver_statement(read, dialect, prefix=f"BEGIN; {upsert.string}; ")


def take_index(connection: Connection, account: str, order_id: str) -> tuple[Any, bool, int]:
    """Open a transaction on `connection` (`Database.statements`) and take `account`'s next index: (the
    transaction's time, whether `order_id` is taken, the index). The transaction stays open, the account's row
    locked, until the caller commits (the index is used) or rolls back (it is given back)."""
    statement = take_then_read_sql(connection.dialect)
    rows = driver_execute(connection, statement.sql, statement.params({"account": account, "order_id": order_id}))
    now, order_taken, index = rows[0]
    return now, bool(order_taken), int(index)


def next_index(connection: Connection, account: str) -> int:
    """The index the account's next create will take (0 before its first)."""
    value = connection.execute(select(DepositAccount.next_index).where(DepositAccount.account == account)).scalar()
    return int(value or 0)


def skipped_count(connection: Connection, account: str) -> int:
    """How many of the account's indexes were passed over (their address was already a given wallet_address)."""
    return int(connection.execute(select(func.count()).where(DepositAddress.account == account,
                                                             DepositAddress.payment_id.is_(None))).scalar() or 0)

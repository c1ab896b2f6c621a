"""Taking an account's next deposit index, in the creating transaction.

The count is one row per account key (`deposit_accounts`), raised by an upsert inside the statement that writes the
payment (`ledger.payments.create_derived_payment`): the row stays locked until that statement's transaction
commits, so concurrent creates, in any number of processes, take consecutive indexes one after another, and a
create that fails (or a process or server that dies before the commit) gives its index back with the rollback: an
index is never given twice, and none is lost. A PostgreSQL SEQUENCE would not make creates wait for each other, but
it is not transactional: every failed create, and every crash of the server (a sequence logs 32 values ahead), would
leave unused indexes, and a wallet stops looking after 20 unused addresses in a row (the gap limit). The wait is
one statement's execution and commit, as for creates on one given wallet address (its lock).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, String, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert

from models import DepositAccount, DepositAddress

ONE = literal_column("1")


def take_statement(when: Any = None) -> Any:
    """The account's next index, taken (parameter `d_account`), RETURNING it as `idx`: the first create of an
    account gets 0. With `when` (SQL, a condition), taken only if it holds: otherwise the statement touches nothing
    and returns no row."""
    row = select(bindparam("d_account", type_=String), ONE)
    upsert = insert(DepositAccount).from_select(["account", "next_index"],
                                                 row if when is None else row.where(when))
    return upsert.on_conflict_do_update(
        index_elements=[DepositAccount.account],
        set_={"next_index": DepositAccount.next_index + ONE, "updated_at": func.now()},
    ).returning((DepositAccount.next_index - ONE).label("idx"))


def next_index(connection: Connection, account: str) -> int:
    """The index the account's next create will take (0 before its first)."""
    value = connection.execute(select(DepositAccount.next_index).where(DepositAccount.account == account)).scalar()
    return int(value or 0)


def skipped_count(connection: Connection, account: str) -> int:
    """How many of the account's indexes were passed over (their address was already a given wallet_address)."""
    return int(connection.execute(select(func.count()).where(DepositAddress.account == account,
                                                             DepositAddress.payment_id.is_(None))).scalar() or 0)

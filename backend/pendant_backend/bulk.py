"""Bulk statements run by the database driver's own `executemany`, compiled once.

SQLAlchemy compiles a statement, looks it up in its cache and builds and converts every parameter set in
Python at each call. Under a heartbeat flood that per-row work was about a fifth of what storing a
heartbeat cost (docs/scaling.md). `Bulk` compiles the statement once for one dialect and converts each
value with its column type's own bind processor, so a row is stored exactly as `Connection.execute` would
store it; `Connection.exec_driver_sql` then hands the whole list to the driver in one call, inside the
connection's transaction.

Only dialects with a positional parameter style (SQLite's `?`) take this path; `Bulk.run` on any other
runs the statement through `Connection.execute`, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect


class Bulk:
    """`statement` for `dialect`; its parameters are the bind names (or, for an INSERT, `columns`)."""

    def __init__(self, statement: Any, dialect: Dialect, *, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=dialect, column_keys=list(columns) if columns else None)
        order = compiled.positiontup
        self.direct = order is not None
        if order is None:
            return
        self.sql = compiled.string
        # Binds with a value of their own (a literal such as the True of `coalesce(online, True)`) are
        # constants; the others come from each row. Each converted once per row, then laid out in order.
        self._constants: dict[str, Any] = {}
        self._converters: list[tuple[str, Callable[[Any], Any]]] = []
        for name in dict.fromkeys(order):
            bind = compiled.binds[name]
            # The dialect's own form of the type: a TypeDecorator's bind_processor() alone would hand the
            # driver a datetime object and let the driver choose its text.
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                value = bind.effective_value
                self._constants[name] = convert(value) if convert else value
            elif convert is not None:
                self._converters.append((name, convert))
        self._layout = itemgetter(*order) if len(order) > 1 else lambda values: (values[order[0]],)

    def run(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute once per row, in one call; the number of rows the driver says changed."""
        if not rows:
            return 0
        if not self.direct:
            return connection.execute(self.statement, list(rows)).rowcount
        constants, converters, layout = self._constants, self._converters, self._layout
        params = []
        for row in rows:
            values = {**constants, **row}
            for name, convert in converters:
                values[name] = convert(values[name])
            params.append(layout(values))
        return connection.exec_driver_sql(self.sql, params).rowcount

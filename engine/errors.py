"""Errors raised by the engine on bad input.

Every input error names where it happened (table, row, field) and why, so
that the command line can print one line and the server can map it to
``INVALID_ARGUMENT`` without rewording.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input data: names the table, the row (if any), the field and the reason.

    Parameters
    ----------
    table
        Which input the error is in, e.g. ``"bids"``, ``"lines"``, ``"feeder"``.
    field
        Column or attribute name.
    reason
        Why the value is wrong, in words a user can act on.
    row
        Zero-based row index in the table, or None for table-level errors.
    """

    def __init__(self, table: str, field: str, reason: str, row: int | None = None):
        self.table = table
        self.field = field
        self.reason = reason
        self.row = row
        where = f"{table}" if row is None else f"{table} row {row}"
        super().__init__(f"{where}, field {field}: {reason}")


class InfeasibleError(RuntimeError):
    """Raised only where a caller asked for a feasible answer and none exists.

    Clearing itself never raises this: an infeasible market is a result with a
    status and a diagnosis.
    """

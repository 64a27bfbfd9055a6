"""One way to print what the server returns: a readable table, or CSV, JSON or Parquet for scripts.

Every command that lists something calls :func:`emit` with the client library's
frozen dataclasses (or plain mappings), so that each format is the same
everywhere:

- ``table`` (default): aligned columns for people; numbers right-aligned,
  floats rounded to :data:`TABLE_DIGITS` decimals with no ``-0``, durations as
  ``H:MM:SS``, cells cut at :data:`TABLE_CELL_WIDTH` characters;
- ``csv``: one header line, every value exact (prices and money as the
  decimal text the server sent, times ISO 8601 UTC with a ``Z``);
- ``json``: one array of objects (prices and money as decimal strings, times
  as ISO 8601 UTC strings); a stream prints one object per line instead;
- ``parquet``: typed columns (times as UTC timestamps, prices as text so that
  they stay exact), written to ``--out`` or to a piped stdout.

Nested values are flattened: a tuple becomes its items joined by ``;``, a
duration its length in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import polars as pl

from dsomarket.clients.files import write_bytes
from dsomarket.engine.errors import InputError

FORMATS = ("table", "csv", "json", "parquet")
STREAM_FORMATS = ("json", "csv")
TABLE_DIGITS = 3
"""Decimals of a float in the table format (kW to the watt); csv, json and parquet keep every digit."""
TABLE_CELL_WIDTH = 60
"""Longest cell of the table format; longer text (an audit payload) is cut with an ellipsis."""


def out_file(text: str) -> Path:
    """``--out FILE``: a path that is not a directory (argparse refuses it in one line)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    return path


def add_format_options(parser: argparse.ArgumentParser, stream: bool = False) -> None:
    """``--format`` (and ``--out`` for lists) on a command that prints rows."""
    if stream:
        parser.add_argument("--format", choices=STREAM_FORMATS, default="json",
                            help="json: one object per line (default); csv: a header, then a row per event")
        return
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="table for people (default, or as --out's extension says); csv, json or parquet "
                             "for scripts")
    parser.add_argument("--out", type=out_file, default=None, metavar="FILE",
                        help="write to FILE instead of stdout (parquet needs it unless stdout is piped)")


def chosen_format(fmt: str | None, out: Path | None) -> str:
    """``fmt``, or when None the format ``out``'s extension names (``.csv``, ``.json``, ``.parquet``), else table."""
    if fmt is not None:
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".") if out is not None else ""
    return {"pq": "parquet"}.get(suffix, suffix) if suffix in (*FORMATS, "pq") else "table"


def plain(value: Any) -> Any:
    """A value as JSON would hold it: Decimal and datetime as text, durations in seconds, tuples joined."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (tuple, list)):
        return ";".join(str(plain(v)) for v in value)
    if isinstance(value, dict):
        return json.dumps({k: plain(v) for k, v in value.items()}, sort_keys=True)
    return value


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` and no fraction when the time is on a whole second."""
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{value.microsecond:06d}Z" if value.microsecond else f"{text}Z"


def record(item: Any) -> dict[str, Any]:
    """A dataclass or mapping as an ordered dict of its fields (values untouched)."""
    if dataclasses.is_dataclass(item):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"cannot print a {type(item).__name__}")


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """Typed columns: datetimes as UTC timestamps, Decimals as text, other values as they are."""
    data: dict[str, list] = {c: [] for c in columns}
    for row in rows:
        for c in columns:
            v = row.get(c)
            data[c].append(v.astimezone(timezone.utc) if isinstance(v, datetime)
                           else v if v is None or isinstance(v, (bool, int, float, str)) else plain(v))
    schema = {}
    for c, values in data.items():
        sample = next((v for v in values if v is not None), None)
        schema[c] = (pl.Datetime("us", "UTC") if isinstance(sample, datetime) else pl.Boolean
                     if isinstance(sample, bool) else pl.Int64 if isinstance(sample, int)
                     else pl.Float64 if isinstance(sample, float) else pl.Utf8)
    return pl.DataFrame(data, schema=schema)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.{TABLE_DIGITS}f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, timedelta):
        return str(value)
    text = str(plain(value))
    return text if len(text) <= TABLE_CELL_WIDTH else text[:TABLE_CELL_WIDTH - 1] + "…"


def table_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns with a header and a rule; numbers right-aligned."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float, Decimal)) and not isinstance(r.get(c), bool)
                   for r in rows if r.get(c) is not None) and rows for c in columns]
    widths = [max([len(c)] + [len(row[k]) for row in cells]) for k, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out) + "\n"


def emit(items: Iterable[Any], fmt: str | None = "table", out: Path | None = None,
         columns: Sequence[str] | type | None = None, stdout: TextIO | None = None) -> int:
    """Print dataclasses or mappings in ``fmt``; returns the number of rows.

    Parameters
    ----------
    items
        Rows: frozen dataclasses of :mod:`clients.api` or mappings.
    fmt
        One of :data:`FORMATS`; None = from ``out``'s extension (``.csv``, ``.json``, ``.parquet``), else table.
    out
        A file to write atomically (a reader sees the old file or the whole new one); stdout when None.
    columns
        Column order and selection, or the dataclass whose fields they are; default the fields of the first
        row. Needed for an empty result to still print its header.
    """
    rows = [record(i) for i in items]
    fmt = chosen_format(fmt, out)
    if isinstance(columns, type):
        columns = [f.name for f in dataclasses.fields(columns)]
    if columns is None:
        columns = list(rows[0]) if rows else []
    stdout = stdout or sys.stdout
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame(rows, columns).write_parquet(buffer)
        data = buffer.getvalue()
    elif fmt == "table":
        data = table_text(rows, columns).encode()
    elif fmt == "csv":
        data = csv_text(rows, columns).encode()
    elif fmt == "json":
        data = (json.dumps([{c: plain(r.get(c)) for c in columns} for r in rows], indent=1) + "\n").encode()
    else:
        raise InputError("output", "format", f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    if out is not None:
        write_bytes(out, data)
        print(f"wrote {len(rows)} rows to {out}", file=sys.stderr)
    elif fmt != "parquet":
        stdout.write(data.decode())
    elif stdout.isatty():
        raise InputError("output", "out", "parquet is binary: give --out FILE or pipe stdout")
    else:
        stdout.flush()
        stdout.buffer.write(data)
        stdout.buffer.flush()
    return len(rows)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], header: bool = True) -> str:
    """CSV of the rows with exact values (see the module docstring)."""
    df = pl.DataFrame({c: [_csv_value(r.get(c)) for r in rows] for c in columns},
                      schema={c: pl.Utf8 for c in columns})
    return df.write_csv(include_header=header, quote_style="necessary")


def _csv_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(plain(value))


class Stream:
    """Rows printed one at a time as they arrive (``follow`` commands): JSON lines or CSV."""

    def __init__(self, fmt: str, columns: Sequence[str], stdout: TextIO | None = None):
        if fmt not in STREAM_FORMATS:
            raise InputError("output", "format", f"a stream prints {' or '.join(STREAM_FORMATS)}, not {fmt!r}")
        self.fmt, self.columns, self.stdout = fmt, list(columns), stdout or sys.stdout
        self._header = fmt == "csv"

    def write(self, item: Any, **extra: Any) -> None:
        row = {**record(item), **extra}
        if self.fmt == "json":
            text = json.dumps({c: plain(row.get(c)) for c in self.columns}) + "\n"
        else:
            text = csv_text([row], self.columns, header=self._header)
            self._header = False
        self.stdout.write(text)
        self.stdout.flush()

"""File formats of the command line: feeder directories, CSV / Parquet tables and JSON.

The engine never touches files; the command line reads and writes them here.
Every write is atomic (a temporary file in the target directory, then
``os.replace``), so a reader never sees a half-written file.

A feeder directory holds

- ``feeder.json``: ``name, root_bus, base_kv, v0_pu[, import_max_kw, export_max_kw]``;
- ``buses.csv``: ``bus, vmin_pu, vmax_pu, load_kw, load_kvar`` (kW / kvar
  withdrawn, positive = consumption);
- ``lines.csv``: ``line, from_bus, to_bus, r_ohm, x_ohm, s_max_kva[, in_service]``
  (``inf`` or empty ``s_max_kva`` = no thermal limit);
- optionally ``loads.csv``: ``bus, interval, load_kw, load_kvar``, per-interval
  loads overriding ``buses.csv`` (``interval`` an ISO 8601 UTC timestamp).

Timestamps are read as ISO 8601 only (``2026-07-01T13:00:00Z``; a missing
offset means UTC): a date such as ``01/12/2026`` is refused, since day and
month cannot be told apart. Errors name rows as a spreadsheet counts them:
the header is row 1 and the first data row is row 2.

Result tables and JSON summaries are rounded (:func:`decimals`): kW, kvar and
kWh to 0.001 (1 W), per-unit voltages, MW and tan(phi) to 1e-6, percentages to
0.001, seconds to 0.0001, prices and money to 0.0001; ``-0.0`` is written as
``0.0``. Feeder directories are written at full precision.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import math
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import builtin
from dsomarket.engine.network import Feeder

ID_COLUMNS = ("bid_id", "bus", "line", "from_bus", "to_bus", "aggregator_id", "resource_id",
              "offer_id", "need_id", "interval", "der_id", "aggregation_id", "participant_id", "feeder")
"""Columns read as strings from CSV, so that ids like ``007`` or ``1`` keep their spelling."""

_FILE_MODE = 0o644

_ISO_8601 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
                       r"(Z|[+-][0-9]{2}:?[0-9]{2})?", re.ASCII)
_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def spreadsheet_row(row: int) -> int:
    """The row a spreadsheet shows for zero-based data row ``row``: the header is row 1."""
    return row + 2


def read_table(path: str | os.PathLike, table: str | None = None, text: Iterable[str] = ()) -> pl.DataFrame:
    """Read a CSV or Parquet table, chosen by the file extension.

    Parameters
    ----------
    path
        ``*.csv``, ``*.parquet`` or ``*.pq``.
    table
        Table name used in errors; default the file's stem.
    text
        Further columns to keep as text (decimal prices, say).

    Returns
    -------
    polars.DataFrame
        The columns of ``ID_COLUMNS`` and ``text`` as strings, except
        ``interval``, which is parsed to UTC timestamps (:func:`parse_intervals`);
        other dtypes as inferred (CSV) or stored (Parquet).

    Raises
    ------
    InputError
        ``(table, "file", ...)`` for a missing, unreadable or unsupported
        file, or a CSV file of one column whose header holds another delimiter;
        ``(table, "interval", ..., row)`` for a timestamp that is not ISO 8601.
    """
    p = Path(path)
    table = table or p.stem
    if not p.is_file():
        raise InputError(table, "file", f"{p}: no such file")
    overrides = {c: pl.Utf8 for c in (*ID_COLUMNS, *text)}
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            # A full-length scan: a column whose first rows look like integers may hold floats later.
            df = pl.read_csv(p, schema_overrides=overrides, infer_schema_length=None)
            one_column_hint(df, p, table)
        elif suffix in (".parquet", ".pq"):
            df = pl.read_parquet(p)
            df = df.with_columns(pl.col(c).cast(t) for c, t in overrides.items()
                                 if c in df.columns and not df.schema[c].is_temporal())
        else:
            raise InputError(table, "file", f"{p}: unsupported extension {p.suffix!r} (use .csv or .parquet)")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(table, "file", f"{p}: cannot read: {str(exc).strip().splitlines()[0]}") from None
    return parse_intervals(df, table)


def one_column_hint(df: pl.DataFrame, p: Path, table: str) -> None:
    """Refuse a CSV table of one column whose header holds another delimiter (a spreadsheet's
    semicolons, say), with a hint, rather than report its columns as missing."""
    if df.width != 1:
        return
    for sep, name in _DELIMITERS.items():
        if sep in df.columns[0]:
            raise InputError(table, "file", f"{p}: one column only, and its header is split by {name}: "
                                            "write comma-separated values")


def parse_intervals(df: pl.DataFrame, table: str, column: str = "interval") -> pl.DataFrame:
    """``df`` with its ``column`` (default ``interval``; if any) as UTC timestamps.

    Text must be ISO 8601 (``2026-07-01T13:00:00Z``, ``2026-07-01 13:00``,
    ``2026-07-01T15:00+02:00``); without an offset it is taken as UTC; empty
    cells stay empty (a single-interval table). Naive timestamps are taken as UTC.

    Raises
    ------
    InputError
        ``(table, "interval", ..., row)`` at the first value that is not an
        ISO 8601 date and time, such as the ambiguous ``01/12/2026 00:00``.
    """
    if column not in df.columns:
        return df
    col = df[column]
    if isinstance(col.dtype, pl.Datetime):
        utc = col.dt.replace_time_zone("UTC") if col.dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return df.with_columns(utc.cast(pl.Datetime("us", "UTC")))
    if col.dtype == pl.Null:
        return df.with_columns(col.cast(pl.Datetime("us", "UTC")))
    if col.dtype != pl.Utf8:
        raise InputError(table, column, f"must be an ISO 8601 UTC timestamp (the column holds {col.dtype})")
    parsed: dict[str, datetime | None] = {}
    bad: list[str] = []
    for value in col.unique().drop_nulls().to_list():
        parsed[value] = _timestamp(value)
        if parsed[value] is None and value.strip():
            bad.append(value)
    if bad:
        row = int(col.is_in(bad).arg_max())
        raise InputError(table, column, f"{col[row]!r} is not an ISO 8601 timestamp such as "
                                            "2026-07-01T13:00:00Z (a date like 01/12/2026 is ambiguous)", row=row)
    return df.with_columns(col.replace_strict(parsed, return_dtype=pl.Datetime("us", "UTC")))


def numbers(df: pl.DataFrame, table: str, columns: Iterable[str]) -> pl.DataFrame:
    """``df`` with ``columns`` (those it has) as floats.

    Raises
    ------
    InputError
        ``(table, column, ..., row)`` at the first value that is not a finite number.
    """
    for col in columns:
        if col not in df.columns:
            continue
        src = df[col]
        value = src.cast(pl.Float64, strict=False)
        bad = (value.is_null() & src.is_not_null()) | ~value.is_finite().fill_null(True)
        if bad.any():
            row = int(bad.arg_max())
            raise InputError(table, col, f"{src[row]!r} is not a finite number", row=row)
        df = df.with_columns(value.alias(col))
    return df


def _timestamp(text: str) -> datetime | None:
    text = text.strip()
    if not _ISO_8601.fullmatch(text):
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:   # 2026-02-30 and the like
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def read_feeder(spec: str | os.PathLike) -> Feeder:
    """A feeder from a directory (see the module notes) or a built-in name.

    Parameters
    ----------
    spec
        A feeder directory, or ``ieee33``, ``ieee69`` or ``synth:N:SEED``
        (:func:`engine.feeders.builtin`). An existing directory wins over a
        built-in of the same name.

    Raises
    ------
    InputError
        For a missing or malformed file, or a feeder that fails validation.
    """
    p = Path(spec)
    if p.is_dir():
        return _read_feeder_dir(p)
    if p.exists():
        raise InputError("feeder", "name", f"{str(spec)!r} is a file, not a feeder directory")
    try:
        return builtin(str(spec))
    except InputError as exc:
        if exc.table != "feeder" or exc.field != "name":
            raise
        raise InputError("feeder", "name", f"no feeder directory {str(spec)!r}, and {exc.reason}") from None


def _read_feeder_dir(d: Path) -> Feeder:
    header_path = d / "feeder.json"
    if not header_path.is_file():
        raise InputError("feeder", "file", f"{header_path}: no such file")
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError("feeder", "file", f"{header_path}: not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InputError("feeder", "file", f"{header_path}: must hold a JSON object")
    buses = read_table(d / "buses.csv", "buses")
    lines = read_table(d / "lines.csv", "lines")
    loads_path = d / "loads.csv"
    profile = read_table(loads_path, "load_profile") if loads_path.exists() else None
    return Feeder.from_tables(header, buses, lines, profile)


def write_feeder(feeder: Feeder, directory: str | os.PathLike) -> Path:
    """Write a feeder as a feeder directory that :func:`read_feeder` reads back.

    Creates the directory if needed and replaces the feeder files in it (a
    stale ``loads.csv`` is removed when the feeder has no load profile).
    Returns the directory.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(d))
    d.mkdir(parents=True, exist_ok=True)
    write_csv(feeder.buses, d / "buses.csv", rounded=False)
    write_csv(feeder.lines, d / "lines.csv", rounded=False)
    profile = feeder.load_profile
    if profile is not None and profile.height:
        write_csv(profile.with_columns(pl.col("interval").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")),
                  d / "loads.csv", rounded=False)
    else:
        with contextlib.suppress(FileNotFoundError):
            (d / "loads.csv").unlink()
    write_json(d / "feeder.json", feeder.header())
    return d


def decimals(name: str) -> int:
    """Decimal places a result column or summary key is rounded to, from its name (see the module notes)."""
    n = name.lower()
    if n.endswith(("_kw", "_kvar", "_kwh", "_kva")) or n in ("kw", "kvar", "kwh"):
        return 3
    if n.endswith(("_pu", "_mw")) or n in ("mw", "tan_phi"):
        return 6
    if n.endswith(("_pct", "_percent")):
        return 3
    return 4


def round_floats(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every float column rounded to :func:`decimals` places and ``-0.0`` made ``0.0``."""
    floats = [c for c, t in df.schema.items() if t.is_float()]
    return df.with_columns(_clean(pl.col(c).round(decimals(c))).alias(c) for c in floats)


def _clean(x: pl.Expr) -> pl.Expr:
    return pl.when(x == 0).then(0.0).otherwise(x)


def write_csv(df: pl.DataFrame, path: str | os.PathLike, rounded: bool = True) -> None:
    """Write a table as CSV, atomically; timestamps as ISO 8601 UTC (``2026-01-01T00:00:00Z``).

    ``rounded``: round floats as :func:`round_floats` does (results); False keeps full precision (feeder data).
    """
    table = round_floats(df) if rounded else df
    _atomic_write(Path(path), lambda fh: table.write_csv(fh, datetime_format="%Y-%m-%dT%H:%M:%SZ"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON (sorted keys, indent 2, rounded floats, NaN and inf as null), atomically."""
    data = (json_text(obj) + "\n").encode("utf-8")
    _atomic_write(Path(path), lambda fh: fh.write(data))


def json_text(obj) -> str:
    """``obj`` as JSON text: sorted keys, indent 2, NaN and inf as ``null``.

    Floats are rounded by the name of their key (:func:`decimals`). numpy
    scalars and arrays become numbers and lists; other unknown objects
    (timestamps, paths) their ``str``.
    """
    return json.dumps(_jsonable(obj), sort_keys=True, indent=2, allow_nan=False, default=str)


def _jsonable(obj, key: str = ""):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, key) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), key)
    if isinstance(obj, np.generic):
        return _jsonable(obj.item(), key)
    if isinstance(obj, float):
        return round(obj, decimals(key)) + 0.0 if math.isfinite(obj) else None
    return obj


_CREATED: list[Path] = []
"""Output directories made by the running command, for :func:`remove_empty_outputs` on Ctrl-C."""


@contextlib.contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """The ``--out`` directory of a command: created if missing, and removed again if the
    command fails before writing anything into it.

    Raises
    ------
    InputError
        ``("out", "out", ...)`` when ``path`` names an existing file.
    """
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise InputError("out", "out", f"{d} is a file; give a directory (new or existing)")
    created = not d.exists()
    if created:
        d.mkdir(parents=True)
        _CREATED.append(d)
    try:
        yield d
    except BaseException:
        if created:
            remove_empty_outputs()
        raise


def remove_empty_outputs() -> None:
    """Remove the output directories this process created that are still empty."""
    while _CREATED:
        with contextlib.suppress(OSError):
            _CREATED.pop().rmdir()   # fails, as it should, on a directory that holds files


def by_id(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """``df`` in feeder order: by interval, then by ``column`` (bus or line id), numerically when
    every id is a whole number (bus 2 before bus 10), else as text. Stable, so ties keep their order."""
    ids = df[column].cast(pl.Utf8)
    numeric = ids.str.contains(r"^[0-9]{1,18}$").all()
    key = pl.col(column).cast(pl.Utf8).cast(pl.Int64) if numeric else pl.col(column).cast(pl.Utf8)
    keys = ([pl.col("interval")] if "interval" in df.columns else []) + [key]
    return df.sort(keys, nulls_last=False, maintain_order=True)


def write_outputs(out: Path, tables: dict[str, pl.DataFrame | None], products: Iterable[str]) -> list[Path]:
    """Write ``tables`` (name -> table, None = not produced this time) as CSV files in ``out``.

    Every file of ``products`` (the names a command may write) that is not
    written this time is removed, so that no table of an earlier run sits
    beside the new summary. Returns the paths written.
    """
    written = []
    for name in products:
        path = out / name
        table = tables.get(name)
        if table is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            write_csv(table, path)
            written.append(path)
    return written


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    _atomic_write(Path(path), lambda fh: fh.write(data))


_PENDING: contextvars.ContextVar[list[tuple[str, Path]] | None] = contextvars.ContextVar("pending", default=None)
"""Inside :func:`synced_once`: the temporary files written so far, each with the path it replaces at the end."""


@contextlib.contextmanager
def synced_once() -> Iterator[None]:
    """Atomic writes inside the block share one flush: their files are written to temporary files, and
    leaving the block syncs them all, renames each over its target, and syncs the renames.

    What a single atomic write promises holds for the whole block, across a crash too: a target is the
    old file or the complete new one, never a partial one, and when the block is left everything written
    in it is on disk. If the block raises, nothing in it is renamed into place (its temporary files are
    removed). A territory's worker writes nine files per interface: two flushes for all of them cost less
    than one ``fsync`` per file (benchmarks/README.md, ``bench_territory.py --split``). A target read
    inside the block is still the old file. Where ``os.sync`` does not exist, each file is synced as usual.
    """
    if not hasattr(os, "sync") or _PENDING.get() is not None:
        yield
        return
    pending: list[tuple[str, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _PENDING.reset(token)
    os.sync()                      # the contents, before any name points at them
    for tmp, path in pending:
        os.replace(tmp, path)
    os.sync()                      # the renames


_UNFLUSHED: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("unflushed", default=None)
"""Inside :func:`flushed_later`: the files renamed into place so far and not yet flushed."""


@contextlib.contextmanager
def flushed_later(written: list[Path]) -> Iterator[None]:
    """Atomic writes inside the block are renamed into place at once but not flushed to disk; each
    target is appended to ``written``, and the caller flushes them all later with :func:`flush`,
    before it writes the record that says they are complete.

    For a batch that has one such record (``territory clear``'s ``territory.json``, removed when the run
    starts and written last): a reader sees the old file or the whole new one at once, but a crash
    before :func:`flush` may leave a target empty or old, which the missing record tells. Thousands of
    interfaces then cost one flush per worker instead of two each (each ``os.sync`` waits for whatever
    else the machine is writing: 25-70 ms wall at load 1-3, docs/territory.md).
    """
    token = _UNFLUSHED.set(written)
    try:
        yield
    finally:
        _UNFLUSHED.reset(token)


def flush(written: Iterable[Path]) -> None:
    """Put the files ``written`` (in :func:`flushed_later`) and their renames on disk: one ``os.sync``
    where there is one, else an ``fsync`` of each file and of each folder."""
    written = list(written)
    if not written:
        return
    if hasattr(os, "sync"):
        os.sync()
        return
    for path in written:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    for folder in {p.parent for p in written}:
        _sync_dir(folder)


def remove(path: str | os.PathLike) -> None:
    """Remove the file ``path`` if it exists, the removal on disk when this returns."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries: a rename is on disk only once its directory is (POSIX leaves it to the
    file system otherwise, and ext4 or XFS can lose it in a crash that keeps the file's contents)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable) -> None:
    # The temporary file lives in the target directory, so os.replace is a
    # rename on one file system: readers see the old file or the new one.
    pending, unflushed = _PENDING.get(), _UNFLUSHED.get()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if pending is None and unflushed is None:
                os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600
        if pending is not None:
            pending.append((tmp, path))
        elif unflushed is not None:
            os.replace(tmp, path)
            unflushed.append(path)
        else:
            os.replace(tmp, path)
            _sync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

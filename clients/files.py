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
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import builtin
from dsomarket.engine.network import Feeder

ID_COLUMNS = ("bid_id", "bus", "line", "from_bus", "to_bus", "aggregator_id", "resource_id",
              "offer_id", "need_id", "interval", "der_id", "aggregation_id", "participant_id", "feeder")
"""Columns read as strings from CSV, so that ids like ``007`` or ``1`` keep their spelling."""

_FILE_MODE = 0o644


def read_table(path: str | os.PathLike, table: str | None = None) -> pl.DataFrame:
    """Read a CSV or Parquet table, chosen by the file extension.

    Parameters
    ----------
    path
        ``*.csv``, ``*.parquet`` or ``*.pq``.
    table
        Table name used in errors; default the file's stem.

    Returns
    -------
    polars.DataFrame
        The columns of ``ID_COLUMNS`` as strings (except a Parquet timestamp
        ``interval``); other dtypes as inferred (CSV) or stored (Parquet).

    Raises
    ------
    InputError
        ``(table, "file", ...)`` for a missing, unreadable or unsupported file.
    """
    p = Path(path)
    table = table or p.stem
    if not p.is_file():
        raise InputError(table, "file", f"{p}: no such file")
    overrides = {c: pl.Utf8 for c in ID_COLUMNS}
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            # A full-length scan: a column whose first rows look like integers may hold floats later.
            return pl.read_csv(p, schema_overrides=overrides, infer_schema_length=None)
        if suffix in (".parquet", ".pq"):
            df = pl.read_parquet(p)
            return df.with_columns(pl.col(c).cast(t) for c, t in overrides.items()
                                   if c in df.columns and not df.schema[c].is_temporal())
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(table, "file", f"{p}: cannot read: {str(exc).strip().splitlines()[0]}") from None
    raise InputError(table, "file", f"{p}: unsupported extension {p.suffix!r} (use .csv or .parquet)")


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
    write_csv(feeder.buses, d / "buses.csv")
    write_csv(feeder.lines, d / "lines.csv")
    profile = feeder.load_profile
    if profile is not None and profile.height:
        write_csv(profile.with_columns(pl.col("interval").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")),
                  d / "loads.csv")
    else:
        with contextlib.suppress(FileNotFoundError):
            (d / "loads.csv").unlink()
    write_json(d / "feeder.json", feeder.header())
    return d


def write_csv(df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as CSV, atomically; timestamps as ISO 8601 UTC (``2026-01-01T00:00:00Z``)."""
    _atomic_write(Path(path), lambda fh: df.write_csv(fh, datetime_format="%Y-%m-%dT%H:%M:%SZ"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON (sorted keys, indent 2, NaN and inf as null), atomically."""
    data = (json_text(obj) + "\n").encode("utf-8")
    _atomic_write(Path(path), lambda fh: fh.write(data))


def json_text(obj) -> str:
    """``obj`` as JSON text: sorted keys, indent 2, NaN and inf as ``null``.

    numpy scalars and arrays become numbers and lists; other unknown objects
    (timestamps, paths) their ``str``.
    """
    return json.dumps(_jsonable(obj), sort_keys=True, indent=2, allow_nan=False, default=str)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _atomic_write(path: Path, write: Callable) -> None:
    # The temporary file lives in the target directory, so os.replace is a
    # rename on one file system: readers see the old file or the new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

"""Loading tabular multivariate time series and preparing them for the model.

A table has one row per time step and one column per variable (feature), plus
optionally a timestamp column and columns to ignore (e.g. a ``label``).

Timestamps: the column named by ``timestamp_column``, or else the first column
whose lower-cased name is one of :data:`TIMESTAMP_COLUMNS`. Text and datetime
values are parsed with :func:`pandas.to_datetime` (time zones are converted to
UTC and dropped); numbers are read as Unix epoch seconds. Timestamps must be
present and strictly increasing. The timestamp column is never a feature.

Missing-value policy (NaN, or an empty CSV cell, is "missing"; +/-inf is an error):

* a variable that is missing on every row is an error (nothing to learn from);
* a row where every variable is missing is an error (it is not an observation);
  note that with a single variable this means any missing value is an error;
* otherwise each variable's gaps are filled by linear interpolation along the
  row order (not the timestamps), and leading / trailing gaps take the nearest
  valid value; :attr:`Table.fill_ratio` reports, per variable, the fraction of
  its values that were filled.

Every failure raises :class:`~model.errors.DataError` (or its subclass
:class:`~model.errors.FeatureMismatchError`) with a message naming the column
and/or row, and ``field`` set to the column where there is one. Row numbers are
0-based positions in the table (the CSV header is not a row).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from model.errors import DataError, FeatureMismatchError, name_list, shorten

TIMESTAMP_COLUMNS = ("timestamp", "time", "date", "datetime")
LABEL_COLUMNS = ("label", "Label")  # ground truth a training or test file may carry
_TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": None}  # None: sniff the delimiter
_PARQUET_SUFFIXES = (".parquet", ".pq")
_MISSING_TOKENS = {"", "nan", "na", "n/a", "null", "none", "<na>"}


@dataclass(frozen=True)
class FileShape:
    """What a file holds, read without parsing its values (see :func:`file_shape`)."""

    rows: int  # data rows (for text files: lines after the header, an upper bound)
    columns: list[str]  # the header's names, as written (duplicates kept)

    @property
    def values(self) -> int:
        return self.rows * len(self.columns)


def file_shape(path: str | Path) -> FileShape:
    """Rows and column names of a CSV / TSV / TXT or Parquet file, cheaply: Parquet's
    metadata, or a text file's header and its line count. Nothing is materialised, so
    limits can be checked before a file is read (a Parquet file of 25 million zeros is
    ~100 kB). DataError for duplicated column names, which pandas would silently
    rename (``a``, ``a.1``)."""
    path = _checked_path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            with pq.ParquetFile(path) as parquet:
                shape = FileShape(parquet.metadata.num_rows, list(parquet.schema_arrow.names))
        else:
            shape = FileShape(_count_lines(path) - 1, _header(path, suffix))
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"file is empty: {path.name}") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:  # incl. pyarrow's errors
        detail = shorten(str(exc).replace(str(path), path.name), 300)
        raise DataError(f"could not parse '{path.name}': {detail}") from exc
    _unique_names(shape.columns, "column")
    return shape


def _header(path: Path, suffix: str) -> list[str]:
    """The first row of a text file as written (pandas' own header renames duplicates)."""
    sep = _TEXT_SEPARATORS[suffix]
    first = pd.read_csv(
        path, sep=sep, engine="python" if sep is None else "c", header=None, nrows=1,
        dtype=str, keep_default_na=False,
    )  # fmt: skip
    return [str(name) for name in first.iloc[0].tolist()] if len(first) else []


def _count_lines(path: Path, chunk: int = 1 << 20) -> int:
    """Lines in a file (a last line without a newline counts), reading 1 MiB at a time."""
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


@dataclass(frozen=True)
class Table:
    """Validated, gap-free numeric data ready for windowing and normalization."""

    values: np.ndarray  # (n, D) float64, finite
    feature_names: list[str]  # D names, in column order of ``values``
    timestamps: np.ndarray | None  # (n,) datetime64[ns], strictly increasing, or None
    fill_ratio: dict[str, float]  # per variable: fraction of values that were missing and filled


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV / TSV / TXT or Parquet file into a DataFrame (no validation yet)."""
    path = _checked_path(path)
    suffix = path.suffix.lower()
    try:
        if suffix not in _PARQUET_SUFFIXES:
            _unique_names(_header(path, suffix), "column")  # before pandas renames them
        frame = _read_any(path, suffix)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"file is empty: {path.name}") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:  # incl. pyarrow's errors
        detail = str(exc).replace(str(path), path.name)  # no server directories in messages
        raise DataError(f"could not parse '{path.name}': {shorten(detail, 300)}") from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"file has no data rows: {path.name}")
    return frame


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _TEXT_SEPARATORS and suffix not in _PARQUET_SUFFIXES:
        known = ", ".join([*_TEXT_SEPARATORS, *_PARQUET_SUFFIXES])
        raise DataError(
            f"cannot read '{shorten(path.name)}': unknown file type '{shorten(suffix)}' "
            f"(use {known})"
        )
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"file is empty: {path.name}")
    return path


def _read_any(path: Path, suffix: str) -> pd.DataFrame:
    if suffix in _PARQUET_SUFFIXES:
        return pd.read_parquet(path)
    sep = _TEXT_SEPARATORS[suffix]
    return pd.read_csv(path, sep=sep, engine="python" if sep is None else "c")


def load_table(path: str | Path, **kwargs: Any) -> Table:
    """Read a file and prepare it; ``kwargs`` go to :func:`prepare_frame`."""
    return prepare_frame(read_frame(path), **kwargs)


def prepare_frame(
    frame: pd.DataFrame,
    *,
    feature_names: Sequence[str] | None = None,
    timestamp_column: str | None = None,
    ignore_columns: Sequence[str] = (),
) -> Table:
    """Validate a DataFrame and turn it into a :class:`Table` (see the module docstring).

    ``feature_names`` (the model's variables) fixes the expected set of feature
    columns and the column order of the result.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    frame = _with_str_columns(frame)
    if isinstance(ignore_columns, str):
        ignore_columns = [ignore_columns]
    ignored = [c for c in map(str, ignore_columns) if c in frame.columns]
    frame = frame.drop(columns=ignored)
    ts_name = _find_timestamp_column(list(frame.columns), timestamp_column)
    features = frame.drop(columns=[ts_name]) if ts_name else frame
    _check_not_empty(features.shape)
    timestamps = _parse_timestamps(frame[ts_name], ts_name) if ts_name else None
    names = _match_features(list(features.columns), feature_names)
    values = np.column_stack([_numeric_column(features[name], name) for name in names])
    return _build_table(values, names, timestamps)  # values: (n, D)


def prepare_array(values: Any, feature_names: Sequence[str] | None = None) -> Table:
    """Validate a numpy array of shape (n,) or (n, D); names default to ``x0..x{D-1}``."""
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[:, None]  # (n, 1)
    if array.ndim != 2:
        raise DataError(f"expected an array of shape (n,) or (n, D), got shape {array.shape}")
    names = _array_names(array.shape[1], feature_names)
    _check_not_empty(array.shape)
    if array.dtype.kind in "biuf":
        matrix = array.astype(np.float64)  # (n, D)
    else:
        columns = [_numeric_column(pd.Series(array[:, j]), n) for j, n in enumerate(names)]
        matrix = np.column_stack(columns)  # (n, D)
    return _build_table(matrix, names, None)


def _check_not_empty(shape: tuple[int, ...]) -> None:
    if shape[0] == 0:
        raise DataError("the data has no rows")
    if shape[1] == 0:
        raise DataError("the data has no feature columns (only timestamp / ignored ones)")


def _with_str_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.columns = _unique_names(frame.columns, "column")
    return frame


def _array_names(width: int, feature_names: Sequence[str] | None) -> list[str]:
    if feature_names is None:
        return [f"x{j}" for j in range(width)]
    names = _unique_names(feature_names, "variable")
    if len(names) != width:
        raise FeatureMismatchError(
            f"expected {len(names)} variable(s) ({', '.join(names)}), got {width} column(s)"
        )
    return names


def _unique_names(raw: Sequence[Any], what: str) -> list[str]:
    """The names as strings; DataError naming the duplicated ones (linear time)."""
    names = [str(n) for n in raw]
    if len(set(names)) == len(names):
        return names
    counts = Counter(names)
    duplicated = sorted(name for name, count in counts.items() if count > 1)
    raise DataError(
        f"duplicated {what} name(s): {name_list(duplicated)}", field=shorten(duplicated[0])
    )


def _match_features(columns: list[str], expected: Sequence[str] | None) -> list[str]:
    """Check the feature columns against the model's variables; return the order to use."""
    if expected is None:
        return columns
    names = _unique_names(expected, "variable")
    wanted = name_list(names, 20)
    given = set(columns)
    missing = [n for n in names if n not in given]
    if missing:
        raise FeatureMismatchError(
            f"missing variable(s): {name_list(missing)}; the model expects: {wanted}",
            field=missing[0],
        )
    expected_names = set(names)
    unexpected = [c for c in columns if c not in expected_names]
    if unexpected:
        raise FeatureMismatchError(
            f"unexpected variable(s): {name_list(unexpected)}; the model expects: {wanted} "
            "(drop the others or list them in ignore_columns)",
            field=shorten(unexpected[0]),
        )
    return names


def _find_timestamp_column(columns: list[str], requested: str | None) -> str | None:
    if requested is not None:
        if str(requested) not in columns:
            raise DataError(
                f"timestamp column '{shorten(requested)}' not found; columns: {name_list(columns)}",
                field=shorten(requested),
            )
        return str(requested)
    return next((c for c in columns if c.lower() in TIMESTAMP_COLUMNS), None)


def _parse_timestamps(series: pd.Series, name: str) -> np.ndarray:
    """Parse and check a timestamp column; returns (n,) datetime64[ns], naive UTC."""
    if ptypes.is_bool_dtype(series.dtype):
        raise DataError(f"timestamp column '{name}' holds booleans, not times", field=name)
    if ptypes.is_numeric_dtype(series.dtype):
        parsed = pd.to_datetime(series, unit="s", utc=True, errors="coerce")
    else:
        parsed = _parse_time_text(series)
    given = series.notna().to_numpy()
    unparsed = np.flatnonzero(parsed.isna().to_numpy() & given)
    if unparsed.size:
        row = int(unparsed[0])
        raise DataError(
            f"timestamp column '{name}': cannot parse {shorten(repr(series.iloc[row]))} at row "
            f"{row}",
            field=name,
        )
    if not given.all():
        row = int(np.flatnonzero(~given)[0])
        raise DataError(f"timestamp column '{name}': value missing at row {row}", field=name)
    try:
        stamps = parsed.dt.tz_convert(None).astype("datetime64[ns]").to_numpy()  # (n,)
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:
        raise DataError(
            f"timestamp column '{name}': {exc}; times must lie between "
            f"{pd.Timestamp.min:%Y-%m-%d} and {pd.Timestamp.max:%Y-%m-%d}",
            field=name,
        ) from exc
    _check_increasing(stamps, name)
    return stamps


def _parse_time_text(series: pd.Series) -> pd.Series:
    """Infer one format from the first value; fall back to per-value parsing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format" chatter
        parsed = pd.to_datetime(series, utc=True, errors="coerce")
        if (parsed.isna() & series.notna()).any():
            parsed = pd.to_datetime(series, utc=True, errors="coerce", format="mixed")
    return parsed


def _check_increasing(stamps: np.ndarray, name: str) -> None:
    steps = np.diff(stamps.astype(np.int64))  # (n-1,) nanoseconds
    bad = np.flatnonzero(steps <= 0)
    if not bad.size:
        return
    row = int(bad[0]) + 1
    here, before = pd.Timestamp(stamps[row]), pd.Timestamp(stamps[row - 1])
    if steps[row - 1] == 0:
        message = f"duplicated timestamp {here} at row {row} (same as row {row - 1})"
    else:
        message = f"timestamps decrease at row {row}: {here} comes after {before} (row {row - 1})"
    raise DataError(f"timestamp column '{name}': {message}; rows must be in time order", field=name)


def _numeric_column(series: pd.Series, name: str) -> np.ndarray:
    """One feature column as (n,) float64 with NaN for missing; refuses non-numbers."""
    dtype = series.dtype
    if ptypes.is_datetime64_any_dtype(dtype) or ptypes.is_timedelta64_dtype(dtype):
        raise DataError(
            f"column '{name}' holds dates/times, not numbers "
            "(pass timestamp_column= if it is the time axis, or ignore it)",
            field=name,
        )
    if ptypes.is_complex_dtype(dtype):
        raise DataError(f"column '{name}' holds complex numbers", field=name)
    if ptypes.is_bool_dtype(dtype) or ptypes.is_numeric_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    objects = series.astype(object)
    numbers = pd.to_numeric(objects, errors="coerce").astype(np.float64).to_numpy()
    tokens = objects.map(lambda v: str(v).strip().lower())
    bad = np.isnan(numbers) & objects.notna().to_numpy() & ~tokens.isin(_MISSING_TOKENS).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"column '{name}' is not numeric: row {row} holds {shorten(repr(objects.iloc[row]))}",
            field=name,
        )
    return numbers


def _build_table(values: np.ndarray, names: list[str], stamps: np.ndarray | None) -> Table:
    _check_finite(values, names)  # values: (n, D)
    filled, fill_ratio = _fill_missing(values, names, stamps)
    return Table(values=filled, feature_names=names, timestamps=stamps, fill_ratio=fill_ratio)


def _check_finite(values: np.ndarray, names: list[str]) -> None:
    infinite = np.isinf(values)  # (n, D)
    if infinite.any():
        col = int(np.flatnonzero(infinite.any(axis=0))[0])
        row = int(np.flatnonzero(infinite[:, col])[0])
        raise DataError(
            f"column '{names[col]}' holds an infinite value at row {row}", field=names[col]
        )


def _fill_missing(
    values: np.ndarray, names: list[str], stamps: np.ndarray | None
) -> tuple[np.ndarray, dict[str, float]]:
    """Apply the missing-value policy; returns the filled (n, D) copy and fill ratios."""
    missing = np.isnan(values)  # (n, D)
    empty_columns = np.flatnonzero(missing.all(axis=0))
    if empty_columns.size:
        name = names[int(empty_columns[0])]
        raise DataError(f"column '{name}' has no values: it is missing on every row", field=name)
    empty_rows = np.flatnonzero(missing.all(axis=1))
    if empty_rows.size:
        row = int(empty_rows[0])
        when = f" ({pd.Timestamp(stamps[row])})" if stamps is not None else ""
        raise DataError(f"row {row}{when} has no values: every variable is missing")
    filled = values.copy()
    positions = np.arange(values.shape[0])  # (n,)
    for col in np.flatnonzero(missing.any(axis=0)):
        gaps = missing[:, col]  # (n,) bool
        # np.interp holds the edge values beyond the first / last valid point
        filled[gaps, col] = np.interp(positions[gaps], positions[~gaps], values[~gaps, col])
    fill_ratio = {name: float(r) for name, r in zip(names, missing.mean(axis=0), strict=True)}
    return filled, fill_ratio


def order_columns(
    array: np.ndarray, variables: Sequence[str] | None, names: Sequence[str], field: str
) -> np.ndarray:
    """The last axis of ``array`` (one column per variable) in the order of ``names``.

    ``variables`` names the columns as given (None: already in the order of ``names``);
    FeatureMismatchError (on ``field``, or on ``variables``) when they do not match.
    """
    if variables is None:
        if array.shape[-1] != len(names):
            raise FeatureMismatchError(
                f"{field} have {array.shape[-1]} variables; the model expects {len(names)}: "
                f"{name_list(names)}",
                field=field,
            )
        return array
    if len(variables) != array.shape[-1]:
        raise FeatureMismatchError(
            f"{len(variables)} names in `variables` for {array.shape[-1]} columns",
            field="variables",
        )
    position = {name: i for i, name in enumerate(variables)}
    if len(position) != len(variables) or position.keys() != set(names):
        raise FeatureMismatchError(
            f"variables {name_list(variables)} do not match the model's: {name_list(names)}",
            field="variables",
        )
    return array[..., [position[name] for name in names]]


def samples_frame(samples: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Sampled windows (n, T, D) as a long table: ``sample``, ``step``, one column per variable."""
    n, steps, width = samples.shape
    frame = pd.DataFrame(samples.reshape(n * steps, width), columns=list(names))
    frame.insert(0, "step", np.tile(np.arange(steps), n))
    frame.insert(0, "sample", np.repeat(np.arange(n), steps))
    return frame

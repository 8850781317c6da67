"""Validated, atomic reads and writes: the only place stages touch files.

Every failure on bad input becomes a ``DataError`` naming the file, the column
and the first offending rows; the CLI turns it into a readable message and a
non-zero exit. Writes go to a temporary sibling and are renamed into place, so
a failed run leaves earlier outputs as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.files import atomic_path, staging_dir  # io.atomic_path stays part of this module's API
from nextbuy.tables_api import pa

MAX_ROWS_SHOWN = 5


class DataError(Exception):
    """Bad input: which file, which column, which rows."""

    def __init__(
        self,
        path: str | os.PathLike,
        message: str,
        column: str | None = None,
        rows: pd.DataFrame | None = None,
    ):
        self.path = str(path)
        self.column = column
        self.rows = rows
        where = f"{self.path}" + (f", column '{column}'" if column else "")
        text = f"{where}: {message}"
        if rows is not None and len(rows):
            text += f"\nfirst offending rows:\n{rows.head(MAX_ROWS_SHOWN).to_string()}"
        self.message = text
        super().__init__(text)


def _schema_error(path: str | os.PathLike, df: pd.DataFrame, err: pa.errors.SchemaErrors) -> DataError:
    cases = err.failure_cases
    first = cases.iloc[0]
    column = first["column"] if isinstance(first["column"], str) else None
    check = str(first["check"])
    if first["schema_context"] == "DataFrameSchema" and check == "column_in_dataframe":
        missing = ", ".join(
            str(c) for c in cases.loc[cases["check"] == "column_in_dataframe", "failure_case"]
        )
        return DataError(path, f"missing column(s): {missing}", column=str(first["failure_case"]))
    if check.startswith("dtype("):
        return DataError(path, f"wrong dtype {first['failure_case']}, expected {check[6:-1]}", column=column)
    same = cases[(cases["column"] == first["column"]) & (cases["check"] == first["check"])]
    idx = pd.to_numeric(same["index"], errors="coerce").dropna().astype(int).unique()
    rows = df.loc[df.index.isin(idx)] if len(idx) else None
    label = {"not_nullable": "missing values (NaN/null)", "field_uniqueness": "duplicate values"}.get(
        check, f"failed check {check}"
    )
    if first["schema_context"] == "DataFrameSchema" and column is None:
        label = f"failed table check {check}"
    return DataError(path, f"{len(same)} value(s) {label}", column=column, rows=rows)


def validate(df: pd.DataFrame, schema: pa.DataFrameSchema, path: str | os.PathLike) -> pd.DataFrame:
    """Validate ``df`` against ``schema``; raise ``DataError`` on the first kind of failure."""
    if df.empty:
        raise DataError(path, f"table '{schema.name}' is empty")
    try:
        return schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise _schema_error(path, df, err) from None


def rows_error(path: str | os.PathLike, df: pd.DataFrame, bad: Mapping[str, pd.Index], message: str) -> None:
    """Raise a DataError for the first column in ``bad`` (from a cross-table check)."""
    if not bad:
        return
    column, rows = next(iter(bad.items()))
    raise DataError(path, f"{len(rows)} row(s) {message}", column=column, rows=df.loc[rows])


def check_file(p: Path) -> None:
    """DataError saying what ``p`` is when it is not a readable, non-empty file."""
    if p.is_symlink() and not p.exists():
        try:
            p.resolve(strict=True)
        except RuntimeError:
            raise DataError(p, "a symbolic link that loops back on itself (no file at its end)") from None
        except OSError:
            raise DataError(p, f"a symbolic link to {os.readlink(p)}, which does not exist") from None
    if not p.exists():
        raise DataError(p, "file not found")
    if p.is_dir():
        raise DataError(p, "a directory, not a file: give the path of the file itself")
    if p.stat().st_size == 0:
        raise DataError(p, "file is empty")


def watched_input(path: str | os.PathLike, key: str, inputs: Path = Path("inputs")) -> Path:
    """``path`` when it lies under ``inputs`` (the folder the stages that read a store's files
    depend on in dvc.yaml), else DataError: DVC would not see the file change and would reuse
    stale outputs for it."""
    p = Path(path)
    inside = Path(os.path.abspath(p)).is_relative_to(Path(os.path.abspath(inputs)))
    if not inside:
        name = p.name or "FILE"
        raise DataError(
            p,
            f"{key}: outside {inputs}/, the folder DVC watches for the store's files, so a change to "
            f"this file would go unseen and the pipeline would reuse stale outputs. Put it there "
            f"(cp {p} {inputs}/ && dvc add {inputs}/{name}, or dvc import-url <url> {inputs}/{name}) "
            f"and set {key}: {inputs}/{name}",
            column=key,
        )
    return p


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """Read parquet/CSV/TSV by extension; unreadable or empty files raise DataError."""
    p = Path(path)
    check_file(p)
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else None
            # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name
            return pd.read_csv(p, sep=sep, engine="python", encoding="utf-8-sig")
    except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable file
        raise DataError(p, f"unreadable file ({type(err).__name__}: {err})") from None
    raise DataError(p, f"unsupported file type '{suffix}' (use .parquet, .csv or .tsv)")


def read_table(
    path: str | os.PathLike, schema: pa.DataFrameSchema, may_be_empty: bool = False
) -> pd.DataFrame:
    """``path`` read and validated against ``schema``; an empty table is refused unless
    ``may_be_empty`` (a stage's empty table that says "none", as :func:`write_empty_table`
    writes it: its columns must still be the schema's)."""
    df = read_frame(path)
    if df.empty and may_be_empty:
        missing = [c for c in schema.columns if c not in df.columns]
        if missing:
            raise DataError(path, f"empty table '{schema.name}' lacks column(s) {missing}", missing[0])
        return df
    return validate(df, schema, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(target)
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_table(df: pd.DataFrame, path: str | os.PathLike, schema: pa.DataFrameSchema) -> None:
    """Validate then write parquet atomically; a bad frame is a bug, reported like bad input."""
    write_tables([(df, path, schema)])


def write_tables(tables: Sequence[tuple[pd.DataFrame, str | os.PathLike, pa.DataFrameSchema]]) -> None:
    """Validate every table first, then write each atomically: one bad table writes nothing."""
    checked = [(validate(df.reset_index(drop=True), schema, path), path) for df, path, schema in tables]
    for out, path in checked:
        with atomic_path(path) as tmp:
            out.to_parquet(tmp, index=False)


def empty_table(schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Zero rows with the schema's columns and dtypes; a pattern column (``src_\\d+``) as one
    example column (``src_0``), so the empty table still matches its schema."""
    columns = {}
    for pattern, col in schema.columns.items():
        name = str(pattern).replace(r"\d+", "0") if col.regex else pattern
        if col.regex and not re.fullmatch(str(pattern), name):
            continue
        dtype = np.dtype(object) if col.dtype is None else col.dtype.type
        if isinstance(dtype, np.dtype) and dtype.kind in "US":
            dtype = np.dtype(object)
        columns[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(columns)


def write_empty_table(path: str | os.PathLike, schema: pa.DataFrameSchema) -> None:
    """An empty table of ``schema`` (parquet, atomic): keeps a declared DVC out defined
    when a run has nothing to put in it. Readers through :func:`read_table` still refuse
    it as empty, naming the file."""
    frame = empty_table(schema)
    try:
        frame = schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:  # a schema with a table-level rule an empty frame breaks
        raise _schema_error(path, frame, err) from None
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Plot data for DVC (CSV), written atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(p, "file is empty")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # truncated, corrupt, binary
        raise DataError(p, f"unreadable JSON ({err})") from None
    except OSError as err:  # a folder in its place, no permission
        raise DataError(p, f"unreadable file ({type(err).__name__}: {err})") from None


def write_npz(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's overloads take the names for allow_pickle


def read_npz(
    path: str | os.PathLike, required: tuple[str, ...] = (), optional: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, never unpickled: every array, or with ``optional`` given only
    ``required`` and those of ``optional`` it holds (a PPNP graph file also holds object arrays
    of metadata that cannot be opened safely). DataError when the file is missing, empty,
    truncated or corrupt, not an npz archive, lacks one of ``required`` (named as the column),
    or an array it must read cannot be read (named as the column)."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(p, "file is empty")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any loader failure is an unreadable file
        raise DataError(p, f"unreadable npz ({type(err).__name__}: {err})") from None
    if not hasattr(data, "files"):
        raise DataError(p, "not an npz archive (a single .npy array)")
    with data:
        missing = [k for k in required if k not in data.files]
        if missing:
            found = ", ".join(data.files)
            raise DataError(p, f"missing array(s): {', '.join(missing)} (found: {found})", column=missing[0])
        wanted = data.files if optional is None else [*required, *(k for k in optional if k in data.files)]
        arrays = {}
        for key in wanted:
            try:
                arrays[key] = data[key]
            except Exception as err:  # noqa: BLE001 - a truncated member or an object array
                raise DataError(
                    p,
                    f"unreadable array ({type(err).__name__}: {err}); store it as a numeric or string array",
                    column=key,
                ) from None
    return arrays


def write_sparse(matrix: sp.spmatrix, path: str | os.PathLike) -> None:
    """A sparse matrix as a scipy ``.npz`` (CSR), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        sp.save_npz(fh, sp.csr_matrix(matrix))


def read_sparse(path: str | os.PathLike, n_rows: int | None = None) -> sp.csr_matrix:
    """A matrix written by :func:`write_sparse`, as CSR; DataError when the file is missing,
    unreadable, holds non-finite values, or (given ``n_rows``) has another number of rows."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    try:
        matrix = sp.csr_matrix(sp.load_npz(p))
    except Exception as err:  # noqa: BLE001 - any loader failure is an unreadable file
        raise DataError(p, f"unreadable sparse npz ({type(err).__name__}: {err})") from None
    if n_rows is not None and matrix.shape[0] != n_rows:
        raise DataError(p, f"has {matrix.shape[0]} row(s), expected {n_rows} (one per product)")
    if not np.isfinite(matrix.data).all():
        raise DataError(p, "has non-finite values")
    return matrix

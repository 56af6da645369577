"""Exports as text streams: CSV (safe to open in a spreadsheet) and NDJSON, written a
chunk at a time from rows read a batch at a time, so any size streams in constant
memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from datetime import date
from datetime import datetime
from typing import Any

#: Cells starting with these are formulas to a spreadsheet (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Rows written between two chunks handed to the web server.
PER_CHUNK = 500


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: text starting like a formula gets a leading
    single quote (customers write the comments; their `=HYPERLINK(...)` must not run)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(
    header: Sequence[str], rows: Iterable[Iterable[Any]], per_chunk: int = PER_CHUNK
) -> Iterator[str]:
    """CSV text in chunks: a byte-order mark (so spreadsheets read UTF-8), the header,
    then the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")
    writer.writerow(header)
    for number, row in enumerate(rows, 1):
        writer.writerow([csv_cell(value) for value in row])
        if number % per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def ndjson_chunks(records: Iterable[dict[str, Any]], per_chunk: int = PER_CHUNK) -> Iterator[str]:
    """NDJSON (one JSON object per line) in chunks."""
    lines: list[str] = []
    for record in records:
        lines.append(json.dumps(record, default=_json_default, ensure_ascii=False))
        if len(lines) == per_chunk:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"

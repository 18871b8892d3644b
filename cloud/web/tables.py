"""Tables, the one place for both ways of reading one: a page of rows after a cursor, and
every row as a CSV streamed in batches (so a table of any size costs one batch of memory).

A table is read by a `ReadPage`: given the cursor to start after ("" for the first page)
and a page size, it returns the work to run on the database threads, which answers the
rows (dicts by column) and the cursor of the next page, or None after the last.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from cloud.web.app import ApiError, in_thread

Rows = Sequence[Mapping[str, Any]]
ReadPage = Callable[[str, int], Callable[[Engine], tuple[Rows, str | None]]]
CSV_BATCH = 500
DEFAULT_PAGE = 50
LARGEST_PAGE = 500


def page_size(request: web.Request) -> int:
    """The `limit` query parameter (50 when absent); ApiError 400 when it is not 1 to 500."""
    raw = request.query.get("limit", str(DEFAULT_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= LARGEST_PAGE:
        raise ApiError(400, "limit", f"{raw!r} must be a whole number from 1 to {LARGEST_PAGE}")
    return int(raw)


def cursor(request: web.Request) -> str:
    """The `after` query parameter: where the page starts ("" for the first)."""
    return request.query.get("after", "")[:200]


def _cell(value: Any) -> Any:
    return "" if value is None else value


def csv_lines(columns: Sequence[str], rows: Rows, header: bool) -> bytes:
    """`rows` as CSV lines in `columns`' order, after the header line when `header`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue().encode()


async def csv_download(
    request: web.Request, filename: str, columns: Sequence[str], read_page: ReadPage
) -> web.StreamResponse:
    """Every row of the table as `filename`, read `CSV_BATCH` rows at a time."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )
    await response.prepare(request)
    after: str | None = ""
    header = True
    while after is not None:
        rows, after = await in_thread(request, read_page(after, CSV_BATCH))
        await response.write(csv_lines(columns, rows, header))
        header = False
    await response.write_eof()
    return response


def by_offset(read: Callable[[Engine, int, int], Rows]) -> ReadPage:
    """A ReadPage for a table read by offset: `read(engine, offset, limit)` returns its rows.

    For small tables (users, sites, campaigns); large ones page by a key instead.
    """

    def read_page(after: str, size: int) -> Callable[[Engine], tuple[Rows, str | None]]:
        start = int(after) if after.isdigit() else 0

        def work(engine: Engine) -> tuple[Rows, str | None]:
            rows = read(engine, start, size + 1)
            more = len(rows) > size
            return rows[:size], str(start + size) if more else None

        return work

    return read_page

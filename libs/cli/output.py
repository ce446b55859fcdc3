"""How `baton` prints: tables, live views and progress bars (rich) on a terminal; plain lines when
the output is a pipe or a file, because scripts and tests read those and must not get box
drawing, colour codes or screens redrawn in place."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table
from rich.text import Text


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr); rich decides whether it is a terminal (NO_COLOR, TERM=dumb
    and a pipe make it plain)."""
    return Console(stderr=stderr, highlight=False)


def interactive(out: Console | None = None) -> bool:
    """Whether to draw: only on a terminal."""
    return (out or console()).is_terminal


def table(*columns: str, title: str | None = None, lines: bool = False) -> Table:
    """Baton's table look; a column name ending in ``>`` is right-aligned (numbers); ``lines``
    separates rows whose cells span several lines."""
    shown = Table(title=title, title_justify="left", show_lines=lines)
    for name in columns:
        right = name.endswith(">")
        shown.add_column(name.removesuffix(">"), justify="right" if right else "left", overflow="fold")
    return shown


def add_row(shown: Table, *cells: object) -> None:
    """A row of values shown as they are: brackets in an error text are not rich markup."""
    shown.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells))


def emit(shown: Table, plain: Iterable[str], out: Console | None = None) -> None:
    """The table on a terminal, otherwise the plain lines (each a stable format scripts may parse)."""
    out = out or console()
    if out.is_terminal:
        out.print(shown)
    else:
        for line in plain:
            print(line, flush=False)


@contextmanager
def status(message: str, out: Console | None = None) -> Iterator[None]:
    """A spinner with ``message`` while the block runs, on a terminal; the message once otherwise."""
    out = out or console(stderr=True)
    if not out.is_terminal:
        out.print(message)
        yield
        return
    with out.status(message):
        yield

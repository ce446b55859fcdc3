"""Progress of long runs — the Maven download of `baton stack fetch`, the phases of the benchmark and
of the chaos run — so nothing is silent for minutes.

On a terminal: rich progress bars redrawn in place. Otherwise (a pipe, a CI log): plain lines, at
most one every few seconds, so logs stay readable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from libs.cli import output

_DOWNLOADED = re.compile(r"Downloaded from [^:]+: (?P<url>\S+) \((?P<size>[\d.]+) (?P<unit>[kMG]?B)")
_UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


class MavenDownload:
    """Follows Maven's output while it resolves Kafka's jars: files and megabytes downloaded so far
    and the file now arriving (Maven reports each file once it is complete, not bytes as they come,
    so there is no percentage: the total is not known before it ends)."""

    def __init__(self, out: Console | None = None) -> None:
        self.files = 0
        self.bytes = 0.0
        self.errors: list[str] = []
        self._last = ""
        self._out = out or output.console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self._out,
            transient=True,
        )
        self._task = self._progress.add_task("Maven: resolving Kafka's jars from Maven Central")

    def __enter__(self) -> MavenDownload:
        if self._out.is_terminal:
            self._progress.start()
        else:
            self._out.print("Maven: resolving Kafka's jars from Maven Central (about 45 MB, once)")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._out.is_terminal:
            self._progress.stop()

    def line(self, text: str) -> None:
        """One line of Maven's output."""
        if text.strip():
            self._last = text.strip()
        if text.startswith("[ERROR]") and len(self.errors) < 20:
            self.errors.append(text.removeprefix("[ERROR]").strip())
        if (found := _DOWNLOADED.search(text)) is None:
            return
        self.files += 1
        self.bytes += float(found["size"]) * _UNITS[found["unit"]]
        name = found["url"].rsplit("/", 1)[-1]
        self._progress.update(
            self._task,
            description=f"Maven: {self.files} files, {self.bytes / 1e6:.1f} MB downloaded · {name}",
        )

    def summary(self) -> str:
        return (
            f"{self.files} files, {self.bytes / 1e6:.1f} MB downloaded"
            if self.files
            else "nothing downloaded"
        )

    def first_error(self) -> str:
        """What Maven said went wrong (its first error line that is not a help pointer)."""
        meaningful = [
            e for e in self.errors if e and not e.startswith(("->", "Re-run", "To see", "For more"))
        ]
        return meaningful[0] if meaningful else self._last or "no output"


class Phases:
    """A run made of named phases, each with its own measure (seconds, messages, orders).

    On a terminal: one bar for the phases and one for the current phase. Otherwise each ``update``
    with a note prints ``  [phase  elapsed] note``, no more often than every ``every_s`` seconds."""

    def __init__(self, names: Sequence[str], out: Console | None = None, every_s: float = 5.0) -> None:
        self._names = list(names)
        self._out = out or output.console()
        self._every_s = every_s
        self._shown_at = 0.0
        self._phase = ""
        self._phase_started = time.monotonic()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._out,
        )
        self._overall = self._progress.add_task("phases", total=len(self._names))
        self._current: TaskID | None = None

    @property
    def interactive(self) -> bool:
        return self._out.is_terminal

    @property
    def phase(self) -> str:
        """The phase running now ("" before the first)."""
        return self._phase

    def __enter__(self) -> Phases:
        if self.interactive:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.interactive:
            self._progress.stop()

    def start(self, name: str, total: float | None = None) -> None:
        """The next phase begins; ``total``: its measure when known (the bar stays open otherwise)."""
        if self._current is not None:
            self._progress.update(self._current, visible=False)
        done = self._names.index(name) if name in self._names else 0
        self._progress.update(self._overall, completed=done, description=f"phase {done + 1}: {name}")
        self._current = self._progress.add_task(name, total=total)
        self._phase, self._phase_started, self._shown_at = name, time.monotonic(), 0.0

    def update(self, done: float | None = None, note: str = "", total: float | None = None) -> None:
        """Progress within the phase; ``note`` says it in words (the plain line is the note)."""
        if self._current is not None:
            described = f"{self._phase}: {note}" if note else self._phase
            self._progress.update(self._current, completed=done, total=total, description=described)
        now = time.monotonic()
        if note and not self.interactive and now - self._shown_at >= self._every_s:
            self._shown_at = now
            self.say(f"  [{self._phase:12} {now - self._phase_started:6.0f}s] {note}")

    def say(self, message: str) -> None:
        """A line that stays (above the bars on a terminal)."""
        self._out.print(message, markup=False, highlight=False)

    def finish(self) -> None:
        if self._current is not None:
            self._progress.update(self._current, visible=False)
        self._progress.update(self._overall, completed=len(self._names), description="done")

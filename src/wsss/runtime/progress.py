"""Progress bars on a terminal, plain log lines everywhere else.

A bar redrawn with ``\\r`` is useless in a log file or a CI log. :func:`progress_bar` shows a
tqdm bar when stderr is a terminal; otherwise (or when bars are switched off) it prints a plain
line every ``every`` updates and at the end, so a piped run still says where it is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LogLine", "progress_bar", "wants_bars"]


def wants_bars(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class LogLine:
    """A progress reporter that prints ``desc: n/total (rate) key=value …`` lines.

    Args:
        total: Expected number of updates (None when unknown).
        desc: Label at the start of each line.
        every: Print when the count reaches a multiple of ``every`` (and always at the end).
        stream: Where to print (default stderr).
        disable: Print nothing.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        every: int = 50,
        stream: TextIO | None = None,
        disable: bool = False,
        initial: int = 0,
    ) -> None:
        self.total, self.desc, self.every = total, desc, max(1, int(every))
        self.stream = sys.stderr if stream is None else stream
        self.disable = disable
        self.n = initial
        self._start = time.perf_counter()
        self._postfix: dict[str, Any] = {}
        self._last_printed = initial

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; print when the count reaches a multiple of ``every``."""
        self.n += n
        if self.n // self.every > self._last_printed // self.every:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self._postfix = values

    def flush(self) -> None:
        """Print the current count now unless it was just printed."""
        if self.n != self._last_printed:
            self._print()

    def write(self, **values: Any) -> None:
        """Print one line with the current count and ``values`` (not kept as the postfix)."""
        self._print(values)

    def _print(self, values: dict[str, Any] | None = None) -> None:
        self._last_printed = self.n
        if self.disable:
            return
        seconds = time.perf_counter() - self._start
        of = f"/{self.total}" if self.total is not None else ""
        values = self._postfix if values is None else values
        extra = " ".join(f"{k}={v}" for k, v in values.items())
        print(
            f"{self.desc}: {self.n}{of} ({seconds:.0f} s) {extra}".rstrip(),
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LogLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    every: int = 50,
    initial: int = 0,
    **tqdm_kwargs: Any,
) -> Any:
    """A tqdm bar on a terminal; :class:`LogLine` lines otherwise; silence when not ``enabled``.

    Used like ``tqdm``: iterate over it, or call ``update``/``set_postfix``/``close``.
    """
    if enabled and wants_bars():
        return tqdm(
            iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, **tqdm_kwargs
        )
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    line = LogLine(total=total, desc=desc, every=every, disable=not enabled, initial=initial)
    if iterable is None:
        return line
    return _Iterating(iterable, line)


class _Iterating:
    def __init__(self, iterable: Iterable, line: LogLine) -> None:
        self.iterable, self.line = iterable, line

    def __iter__(self) -> Iterator:
        with self.line:
            for item in self.iterable:
                yield item
                self.line.update(1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.line, name)

"""A one-line progress bar on stderr that table lines on stdout can pass through.

On a terminal it redraws in place; otherwise (a log file, CI) it writes a
plain line every tenth of the way, so logs stay readable.
"""
import sys
import time


def _fmt_s(s):
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    def __init__(self, total, stream=sys.stderr, width=28):
        self.total = max(1, total)
        self.done = 0
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()
        self.label = ""
        self._shown = False
        self._next_decile = 1

    def _line(self):
        frac = self.done / self.total
        fill = int(frac * self.width)
        elapsed = time.perf_counter() - self.t0
        eta = f" eta {_fmt_s(elapsed / frac - elapsed)}" if 0 < frac < 1 else ""
        return (f"[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} "
                f"{_fmt_s(elapsed)}{eta} {self.label}")

    def _clear(self):
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
            self._shown = False

    def _draw(self):
        if self.tty:
            self.stream.write("\r\033[K" + self._line()[:160])
            self.stream.flush()
            self._shown = True
        elif self.done * 10 >= self._next_decile * self.total and self.done < self.total:
            self._next_decile = self.done * 10 // self.total + 1
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def start(self, label):
        """Show what runs now (before the work)."""
        self.label = label
        self._draw()

    def step(self):
        self.done += 1
        self._draw()

    def write(self, line, out=sys.stdout):
        """Print a line to `out` without tearing the bar."""
        self._clear()
        out.write(line + "\n")
        out.flush()
        if self.tty and self.done < self.total:
            self._draw()

    def close(self):
        self._clear()
        if self.tty:
            self.stream.flush()

"""Progress of long training calls, reported from inside the compiled program.

The compiled training loop calls a :class:`Progress` (through ``jax.debug.callback``) with the
iterations done after every evaluation. What the user sees depends on where stderr goes:

* a terminal: a tqdm bar;
* a Jupyter / Colab kernel: tqdm's notebook bar (``tqdm.auto``);
* anything else (a log file, a batch job, a pipe): a plain line such as
  ``ltjax: round 3: 12,000/50,000 iterations (24%), 1m05s elapsed, ~3m26s left`` at most
  every ``LTJAX_PROGRESS_SECONDS`` seconds (default 60), so a long round is never silent.

``mode``: ``True`` (or ``"auto"``) picks by the rules above, ``"bar"`` forces a bar, ``"lines"``
forces plain lines, ``False`` / ``None`` reports nothing (and the trainer then compiles its
program without the host callback, which JAX can keep in its persistent compilation cache).
"""

from __future__ import annotations

import os
import sys
import time

MODES = ("auto", "bar", "lines")
DEFAULT_SECONDS = 60.0


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def resolve(mode) -> str | None:
    """``None`` (off), ``"bar"``, ``"notebook"`` or ``"lines"`` for a ``progress`` argument."""
    if mode is None or mode is False:
        return None
    if mode is True:
        mode = "auto"
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"progress={mode!r} is not valid: must be True, False, or one of {', '.join(MODES)}")
    if mode == "auto":
        if _in_notebook():
            return "notebook"
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


def _interval() -> float:
    text = os.environ.get("LTJAX_PROGRESS_SECONDS", "")
    try:
        v = float(text) if text else DEFAULT_SECONDS
    except ValueError:
        raise ValueError(f"LTJAX_PROGRESS_SECONDS={text!r} is not valid: must be a number of seconds > 0") from None
    if not v > 0:
        raise ValueError(f"LTJAX_PROGRESS_SECONDS={text!r} is not valid: must be a number of seconds > 0")
    return v


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class Progress:
    """Counts iterations of one training call after another (``start`` … ``close``).

    ``__call__(done)`` receives the iterations done in the current pass; a smaller number
    than the last means the next sequential ticket chunk started counting from 0.
    """

    def __init__(self, mode=True, stream=None):
        self.kind = resolve(mode)
        self.enabled = self.kind is not None
        self.stream = stream
        self.interval = _interval() if self.kind == "lines" else 0.0
        self.bar, self.offset, self.last, self.total, self.desc = None, 0, 0, 0, ""
        self.t0 = self.printed = 0.0

    def start(self, desc: str, total: int, offset: int = 0, passes: int = 1):
        """``passes``: how many times the program counts to ``total`` (sequential ticket chunks)."""
        self.offset, self.last, self.total, self.desc = offset, 0, total * passes, desc
        self.t0 = self.printed = time.monotonic()
        if self.kind in ("bar", "notebook"):
            if self.kind == "bar":
                from tqdm import tqdm
            else:
                from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=desc, unit="it", leave=False, dynamic_ncols=True,
                            file=self.stream)

    def __call__(self, done):
        done = int(done)
        if done < self.last:
            self.offset += self.last
        self.last = done
        n = min(self.offset + done, self.total)
        if self.bar is not None:
            self.bar.n = n
            self.bar.refresh()
        elif self.kind == "lines":
            now = time.monotonic()
            if now - self.printed >= self.interval and 0 < n < self.total:
                self.printed = now
                spent = now - self.t0
                left = spent * (self.total - n) / n
                print(f"ltjax: {self.desc}: {n:,}/{self.total:,} iterations ({100 * n // max(self.total, 1)}%), "
                      f"{_clock(spent)} elapsed, ~{_clock(left)} left",
                      file=self.stream or sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

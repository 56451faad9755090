"""The round loop every study runs (ltjax.loop): its order, what it skips, and where SIGTERM stops it."""

import os
import signal

import pytest

from ltjax import loop
from ltjax.midround import Preempted


def _toy(calls: list, kept: dict, term_in=None) -> loop.Rounds:
    """Rounds labelled by a width: mask = the width, start = (10 × width, width), fit adds them,
    commit keeps the result in ``kept``; a SIGTERM is sent during round ``term_in``'s fit."""
    def fit(r, source, mask, begin):
        calls.append(("fit", r, source, mask, begin))
        if r == term_in:
            os.kill(os.getpid(), signal.SIGTERM)
        return source + mask + begin, f"record {r}"

    def commit(r, mask, params, record):
        calls.append(("commit", r, params, record))
        kept[r] = params
        return params

    return loop.Rounds("width", lambda r: calls.append(("mask", r)) or r, lambda r, m: (10 * m, m), fit, commit,
                       lambda r: kept.get(r))


def test_each_round_runs_mask_start_fit_commit_in_order_and_done_rounds_are_skipped():
    calls, kept = [], {4: 999}
    assert loop.run(_toy(calls, kept), [8, 4, 2]) == [96, 999, 24]
    assert calls == [("mask", 8), ("fit", 8, 80, 8, 8), ("commit", 8, 96, "record 8"),
                     ("mask", 2), ("fit", 2, 20, 2, 2), ("commit", 2, 24, "record 2")]


def test_sigterm_stops_after_the_round_is_committed_and_a_rerun_continues_after_it():
    calls, kept = [], {}
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="after width 6 was saved"):
        loop.run(_toy(calls, kept, term_in=6), [8, 6, 4])
    assert kept == {8: 96, 6: 72} and ("mask", 4) not in calls  # round 6 committed, round 4 never started
    assert signal.getsignal(signal.SIGTERM) == previous  # the loop's own watch is gone
    calls.clear()
    assert loop.run(_toy(calls, kept), [8, 6, 4]) == [96, 72, 48]
    assert [c[:2] for c in calls] == [("mask", 4), ("fit", 4), ("commit", 4)]

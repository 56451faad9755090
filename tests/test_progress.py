"""Progress reports: a bar on a terminal, plain lines elsewhere, nothing when off."""

from __future__ import annotations

import io
import re

import pytest

from ltjax import lottery, presets, progress
from ltjax.config import ConfigError
from ltjax.progress import Progress


def test_resolve_modes(monkeypatch):
    assert progress.resolve(False) is None and progress.resolve(None) is None
    assert progress.resolve("bar") == "bar" and progress.resolve("lines") == "lines"
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal, not a notebook
    assert progress.resolve(True) == "lines" and progress.resolve("auto") == "lines"
    for bad in ("nope", 1, "Lines"):
        with pytest.raises(ValueError, match="progress=.* is not valid: must be True, False, or one of"):
            progress.resolve(bad)


def test_lines_count_chunks_and_skip_the_end(monkeypatch):
    monkeypatch.setenv("LTJAX_PROGRESS_SECONDS", "1e-9")  # a line at every report
    out = io.StringIO()
    p = Progress("lines", stream=out)
    p.start("round 3", 500, passes=2)  # two sequential ticket chunks of 500 iterations each
    for done in (250, 500, 250, 500):
        p(done)
    p.close()
    lines = out.getvalue().splitlines()
    assert [re.search(r"round 3: ([\d,]+)/1,000 iterations \((\d+)%\)", s).groups() for s in lines] == [
        ("250", "25"), ("500", "50"), ("750", "75")]  # the finished 1,000 is the round's own summary line
    assert all(s.startswith("ltjax: ") and "elapsed, ~" in s and s.endswith(" left") for s in lines)


def test_lines_at_most_every_interval(monkeypatch):
    monkeypatch.setenv("LTJAX_PROGRESS_SECONDS", "60")
    clock = iter([0.0, 10.0, 59.0, 61.0, 100.0, 130.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("lines", stream=out)
    p.start("round 1", 100)  # t = 0
    for done in (10, 20, 30, 40, 50):  # at t = 10, 59, 61, 100, 130
        p(done)
    assert re.findall(r"(\d+)/100 iterations", out.getvalue()) == ["30", "50"]
    assert "1m01s elapsed, ~2m22s left" in out.getvalue()  # 30 done in 61 s: 70 more take ~142 s


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_bad_interval_is_named(monkeypatch, bad):
    monkeypatch.setenv("LTJAX_PROGRESS_SECONDS", bad)
    with pytest.raises(ValueError, match=f"LTJAX_PROGRESS_SECONDS='{bad}' is not valid"):
        Progress("lines")


def test_a_run_off_a_terminal_prints_lines(tmp_path, monkeypatch, capsys):
    """The default (progress=True) with stderr captured, as in a batch job's log file."""
    monkeypatch.setenv("LTJAX_PROGRESS_SECONDS", "1e-9")
    cfg = presets.get("lenet_mnist_iclr2019").replace(
        dataset="synthetic_mnist", widths=(16,), iterations=200, eval_every=50, seeds=1, rounds=2, validation_size=100)
    lottery.run(cfg, tmp_path, log=lambda _: None)
    err = capsys.readouterr().err
    for r in (0, 1):
        assert [int(n) for n in re.findall(rf"ltjax: round {r}: (\d+)/200 iterations", err)] == [50, 100, 150]


def test_bad_progress_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="progress='yes' is not valid"):
        lottery.run(presets.get("lenet_mnist_iclr2019"), tmp_path, progress="yes")
    assert not any(tmp_path.iterdir())


def test_cli_progress_modes(monkeypatch, tmp_path, capsys):
    from ltjax import cli

    seen = []
    monkeypatch.setattr(lottery, "run", lambda config, out, **kw: (seen.append(kw["progress"]), 1 / 0))
    argv = ["run", "lenet_mnist_2018", "--out", str(tmp_path)]
    for env, want in (("", True), ("0", False), ("1", "bar"), ("bar", "bar"), ("lines", "lines")):
        monkeypatch.setenv("LTJAX_PROGRESS", env)
        with pytest.raises(ZeroDivisionError):
            cli.main(argv)
        assert seen[-1] == want, env
    monkeypatch.setenv("LTJAX_PROGRESS", "sometimes")
    assert cli.main(argv) == 2
    assert "LTJAX_PROGRESS='sometimes' is not valid" in capsys.readouterr().err
    monkeypatch.setenv("LTJAX_PROGRESS", "lines")
    with pytest.raises(ZeroDivisionError):
        cli.main([*argv, "--no-progress"])
    assert seen[-1] is False


def test_global_scope_refuses_layer_rates():
    cfg = presets.get("lenet_mnist_2018")  # layerwise, out layer at half the rate
    with pytest.raises(ConfigError, match=r"layer_rates=.* is not valid: must be empty with scope=global"):
        cfg.with_overrides(["scope=global"])
    assert cfg.with_overrides(["scope=global", "layer_rates="]).layer_rates == ()

"""``ltjax runs``, ``ltjax compare`` and ``ltjax plot`` on tiny real runs: tables whose cells
equal what :func:`ltjax.store.load_run` reads, the status of complete, incomplete, damaged and
running runs, and PNG files."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import threading

import numpy as np
import pytest

from ltjax import lottery, presets, report
from ltjax.data import DataUnavailableError
from ltjax.store import RunLock, RunLockedError, load_run, lock_holder
from tests.test_cli import _main
from tests.test_reliability import _holder

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder with a 3-round and a 2-round run, copies of the first made incomplete and
    damaged, a config.json that can't be read, and folders that are not runs."""
    parent = tmp_path_factory.mktemp("runs")
    base = presets.get("lenet_mnist_iclr2019").replace(seeds=2, iterations=200, eval_every=100)
    try:
        long = lottery.run(base.replace(rounds=3, widths=(64,)), parent, progress=False, log=lambda s: None).path
        short = lottery.run(base.replace(rounds=2, widths=(32,)), parent, progress=False, log=lambda s: None).path
    except DataUnavailableError as e:
        pytest.skip(f"MNIST not available: {e}")
    incomplete, damaged = parent / "incomplete", parent / "damaged"
    shutil.copytree(long, incomplete)
    shutil.rmtree(incomplete / "round_002")
    shutil.copytree(long, damaged)
    victim = max((p for p in (damaged / "round_001").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    (parent / "unreadable").mkdir()
    (parent / "unreadable" / "config.json").write_text("{not json")
    (parent / "notes").mkdir()
    (parent / "notes" / "todo.txt").write_text("not a run")
    (parent / "README.txt").write_text("not a run either")
    return {"parent": parent, "long": long, "short": short, "incomplete": incomplete, "damaged": damaged}


def _rows(text: str) -> dict[str, list[str]]:
    """Cells of an aligned table by their first cell (columns are 2+ spaces apart)."""
    lines = text.splitlines()
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in lines[2:])}


def _last_round_cells(run_path) -> list[str]:
    m = load_run(run_path).rounds[-1].metrics
    return [f"{100 * np.mean(m['density']):.2f}", f"{100 * np.mean(m['test_acc_at_es']):.2f}"]


def test_runs_lists_each_run_with_its_status(capsys, runs):
    code, out, err = _main(capsys, "runs", runs["parent"])
    assert code == 0, err
    assert out.splitlines()[1].split() == ["run", "config", "hash", "rounds", "density", "%", "test", "acc",
                                           "@es", "%", "status"]
    rows = _rows(out)
    names = {"long": runs["long"].name, "short": runs["short"].name, "incomplete": "incomplete", "damaged": "damaged"}
    assert sorted(rows) == sorted([*names.values(), "unreadable"])
    for key, done, status in [("long", "3/3", "complete"), ("short", "2/2", "complete"),
                              ("incomplete", "2/3", "incomplete"), ("damaged", "3/3", "damaged (round 1)")]:
        run = load_run(runs[key])
        assert rows[names[key]] == [names[key], "lenet_mnist_iclr2019", run.config.hash(), done,
                                    *_last_round_cells(runs[key]), status], key
    assert rows["unreadable"][-1].startswith("damaged (config.json cannot be read")
    assert rows[names["long"]][4] != rows[names["incomplete"]][4]  # 3 rounds vs 2: another density
    assert load_run(runs["long"]).config.hash() != load_run(runs["short"]).config.hash()
    assert report.runs_table(runs["parent"]) == out.rstrip("\n")


def test_runs_shows_who_holds_a_running_run(capsys, runs, tmp_path):
    parent = tmp_path / "parent"
    d = parent / "busy"
    shutil.copytree(runs["short"], d)
    holder = _holder(d)  # another process, holding the run's RunLock
    try:
        code, out, err = _main(capsys, "runs", parent)
        assert code == 0, err
        assert _rows(out)["busy"][-1] == f"running (pid {holder.pid} on {socket.gethostname()})"
        with pytest.raises(RunLockedError):  # looking did not take the lock from its holder
            RunLock(d).__enter__()
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in (d / "LOCK").read_text()  # the killed holder's record stays...
    assert lock_holder(d) is None  # ...but no one holds the lock
    code, out, _ = _main(capsys, "runs", parent)
    assert _rows(out)["busy"][-1] == "complete"
    with RunLock(d):
        pass


def test_a_run_starting_while_its_lock_is_looked_at_is_not_refused(tmp_path):
    """lock_holder holds a shared lock for an instant: a RunLock taken then asks again."""
    fd = os.open(tmp_path / "LOCK", os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)
    release = threading.Timer(0.01, lambda: os.close(fd))
    release.start()
    with RunLock(tmp_path):
        assert lock_holder(tmp_path).startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")
    release.join()
    assert lock_holder(tmp_path) is None


def test_runs_of_missing_or_empty_folder(capsys, tmp_path):
    code, out, err = _main(capsys, "runs", tmp_path / "missing")
    assert code == 2 and out == ""
    assert err.startswith("ltjax: error: ") and str(tmp_path / "missing") in err and "Traceback" not in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, out, err = _main(capsys, "runs", tmp_path / "empty")
    assert code == 0 and err == ""
    assert out.strip() == f"no ltjax runs under {tmp_path / 'empty'}"


def test_show_of_a_folder_of_runs_suggests_runs(capsys, runs):
    code, out, err = _main(capsys, "show", runs["parent"])
    assert code == 2
    assert "not an ltjax run directory" in err and f"`ltjax runs {runs['parent']}`" in err
    assert "holds 5 run directories" in err


def test_compare_aligns_runs_by_round(capsys, runs):
    code, out, err = _main(capsys, "compare", runs["long"], runs["short"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == [runs["long"].name, runs["short"].name]
    assert lines[2].split() == ["round", *["density", "%", "test", "acc", "@es", "%"] * 2]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in lines[3:])}
    assert sorted(rows) == ["0", "1", "2"]
    for i, key in enumerate(("long", "short")):
        run = load_run(runs[key])
        for rd in run.rounds:
            m = rd.metrics
            acc = 100 * np.asarray(m["test_acc_at_es"], np.float64)
            assert rows[str(rd.index)][2 * i:2 * i + 2] == [f"{100 * np.mean(m['density']):.2f}",
                                                            f"{acc.mean():.2f} ± {acc.std():.2f}"], (key, rd.index)
    assert rows["2"][2:] == ["—", "—"]
    assert report.compare_table([load_run(runs["long"]), load_run(runs["short"])]) == out.rstrip("\n")


def test_compare_needs_two_runs(capsys, runs):
    code, _, err = _main(capsys, "compare", runs["long"])
    assert code == 2 and "two or more" in err


def test_compare_plot_and_plot_write_pngs(capsys, runs, tmp_path):
    fig = tmp_path / "figs" / "compare.png"
    code, out, err = _main(capsys, "compare", runs["long"], runs["short"], "--plot", fig)
    assert code == 0, err
    assert f"wrote {fig}" in out
    assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 1000

    code, out, err = _main(capsys, "plot", runs["long"], "--out", tmp_path / "plots")
    assert code == 0, err
    written = out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["accuracy_vs_density.png", "early_stop_vs_density.png",
                                                      "layer_density.png"]
    for p in written:
        assert p.startswith(str(tmp_path / "plots"))
        with open(p, "rb") as f:
            assert f.read(8) == PNG and f.seek(0, 2) > 1000, p


def test_plot_defaults_to_the_run_figures_folder(capsys, runs, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(runs["short"], d)
    code, out, err = _main(capsys, "plot", d)
    assert code == 0, err
    names = ("accuracy_vs_density", "early_stop_vs_density", "layer_density")
    assert out.split() == [str(d / "figures" / f"{n}.png") for n in names]
    assert all((d / "figures" / f"{n}.png").read_bytes()[:8] == PNG for n in names)


def test_layer_densities_are_the_masks(runs):
    run = load_run(runs["long"])
    total, layers = report.densities(run)
    for i, rd in enumerate(run.rounds):
        kernels = {k: v["kernel"] for k, v in rd.mask.items()}
        assert sorted(kernels) == sorted(layers)
        for name, kernel in kernels.items():
            assert layers[name][i] == pytest.approx(100 * np.mean(kernel))
        kept = sum(k.sum() for k in kernels.values())
        assert total[i] == pytest.approx(100 * kept / sum(k.size for k in kernels.values()))

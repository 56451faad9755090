"""``ltjax supermask PRESET``: the printed rows of a tiny preset (the exact per-layer counts IMP
would leave, every criterion once per target, all criteria equal at density 1 where every mask is
the dense one, the learned supermask lines), and user errors rejected before any training."""

from __future__ import annotations

import re

import pytest

from ltjax import cli, pruning
from ltjax import supermask as S

TINY = ["supermask", "lenet_mnist_iclr2019", "--set", "dataset=synthetic_mnist", "--set", "widths=16", "--set", "iterations=40",
        "--set", "eval_every=20", "--set", "validation_size=64"]
ROW = re.compile(r"^\s*([\d.]+) (\w+)\s+([\d.]+)\s+([\d.]+)$")


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> list[tuple[float, str, float, float]]:
    return [(float(m[1]), m[2], float(m[3]), float(m[4])) for m in map(ROW.match, out.splitlines()) if m]


def _after_imp(n: int, rate: float, rounds: int) -> int:
    for _ in range(rounds):
        n -= pruning.static_prune_count(n, rate)
    return n


@pytest.fixture
def no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(S, "make_trainer", boom)


def test_rounds_rows_and_learned(capsys):
    code, out, err = _main(capsys, *TINY, "--seeds", "2", "--criteria", "large_final_same_sign,random",
                           "--rounds", "3", "--learn", "20")
    assert code == 0, err
    assert "mean over 2 seeds" in out
    # LeNet-16: fc1 784x16, out 16x10; the preset prunes fc1 20% and out 10% per round
    fc1, o = _after_imp(784 * 16, 0.2, 3), _after_imp(160, 0.1, 3)
    assert f"per layer: fc1 {100 * fc1 / 12544:.1f}%, out {100 * o / 160:.1f}%" in out
    rows = _rows(out)
    assert [r[1] for r in rows] == ["large_final_same_sign", "random"]
    assert all(r[0] == pytest.approx(100 * (fc1 + o) / (12544 + 160), abs=0.006) for r in rows)
    assert all(0 <= r[2] <= 100 and 0 <= r[3] <= 100 for r in rows)
    learned = [line for line in out.splitlines() if line.startswith("learned supermask")]
    assert [line.split(",")[0] for line in learned] == ["learned supermask on theta0",
                                                        "learned supermask on signed_constant"]
    assert all("20 steps" in line for line in learned)


def test_densities_rows_dense_mask_is_every_criterion(capsys):
    code, out, err = _main(capsys, *TINY, "--criteria", "large_final,movement,small_init", "--densities", "1,0.25")
    assert code == 0, err
    # one-shot rates of the preset: out is pruned at half fc1's rate (0.1 vs 0.2)
    assert "per layer: fc1 100.0%, out 100.0%" in out and "per layer: fc1 25.0%, out 62.5%" in out
    rows = _rows(out)
    assert [(r[0], r[1]) for r in rows[:3]] == [(100.0, c) for c in ("large_final", "movement", "small_init")]
    assert len({r[2] for r in rows[:3]}) == 1 and len({r[3] for r in rows[:3]}) == 1  # all the dense mask
    assert len(rows) == 6 and "learned" not in out


@pytest.mark.parametrize("args, expect", [
    (["--criteria", "large_final,large_finall"], "unknown mask criterion 'large_finall' (did you mean 'large_final'?)"),
    (["--criteria", ","], "no mask criteria given"),
    (["--densities", "0.5,abc"], "--densities='0.5,abc' is not valid"),
    (["--densities", "1.5"], "density 1.5 is not valid"),
    (["--learn", "-3"], "--learn=-3 is not valid"),
    (["--set", "nosuchkey=1"], "nosuchkey"),
])
def test_user_errors_before_training(capsys, no_training, args, expect):
    code, out, err = _main(capsys, *TINY, *args)
    assert code == 2, (out, err)
    assert err.startswith("ltjax: error: ") and expect in err, err
    if "criterion" in expect:
        assert "valid criteria: " + ", ".join(S.NAMES) in err


def test_rounds_and_densities_exclusive(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*TINY, "--rounds", "3", "--densities", "0.5"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_config_keeps_by_hand():
    from ltjax import presets

    sizes = {"fc1": 1000, "fc2": 100, "out": 10}
    glob = presets.get("lenet_mnist_openlth")  # global 20% per round, out excluded
    assert S.config_keeps(glob, sizes, rounds=[0, 2]) == [1100, 704]  # 1100 → 880 → 704
    assert S.config_keeps(glob, sizes, densities=[0.5]) == [550]
    layer = presets.get("lenet_mnist_iclr2019")  # 20% per round, out 10%
    assert S.config_keeps(layer, sizes, rounds=[2]) == [{"fc1": 640, "fc2": 64, "out": 8}]  # 9 → 8 (0.9 rounds to 1)
    assert S.config_keeps(layer, sizes, densities=[0.2]) == [{"fc1": 200, "fc2": 20, "out": 6}]  # out: 1 − 0.8·0.5
    with pytest.raises(ValueError, match="exactly one"):
        S.config_keeps(layer, sizes)

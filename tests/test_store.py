"""The store's study parts and resume points, which every driver (rounds, early-ticket
studies, XOR) keeps its finished work in: named by a hash of what decides them, written
atomically, checked when read back."""

import json

import numpy as np
import pytest

from ltjax import store
from ltjax.store import CorruptRunError


def test_a_part_is_computed_once_and_keyed_by_every_setting(tmp_path):
    calls = []

    def compute(x):
        return lambda: calls.append(x) or {"value": np.arange(3) * x, "x": x}

    a = store.part(tmp_path, "grid", {"s": 1, "rewind_epochs": [0, 2]}, compute(1))
    again = store.part(tmp_path, "grid", {"rewind_epochs": [0, 2], "s": 1}, compute(99))  # key order is no setting
    assert a == again == {"value": [0, 1, 2], "x": 1} and calls == [1]
    other = store.part(tmp_path, "grid", {"s": 1, "rewind_epochs": [0, 3]}, compute(2))  # one setting differs
    assert other["x"] == 2 and calls == [1, 2]
    assert store.part(tmp_path, "ppr", {"s": 1, "rewind_epochs": [0, 2]}, compute(3))["x"] == 3  # another kind
    names = sorted(p.name for p in (tmp_path / store.PARTS).iterdir())
    assert len(names) == 3 and all(n.endswith(".json") for n in names) and not list(tmp_path.rglob("*.tmp"))
    assert store.load_part(tmp_path, "grid", {"s": 2, "rewind_epochs": [0, 2]}) is None


def test_a_part_file_that_does_not_hold_its_key_is_refused(tmp_path):
    key = {"lr": 0.1, "epochs": [1, 2]}
    store.save_part(tmp_path, "ppr", key, {"acc": 0.5})
    path = store.part_path(tmp_path, "ppr", key)
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "key": {"lr": 0.01, "epochs": [1, 2]}}))
    with pytest.raises(CorruptRunError, match=r"settings \{'lr': 0.01.*delete it to recompute"):
        store.load_part(tmp_path, "ppr", key)
    path.write_text("{not json")
    with pytest.raises(CorruptRunError, match="cannot be read"):
        store.load_part(tmp_path, "ppr", key)


def test_a_resume_point_is_replaced_whole_even_when_killed_mid_swap(tmp_path):
    p = tmp_path / "resume"
    store.save_latest(p, {"epoch": np.int64(1), "w": np.ones(3, np.float32)})
    store.save_latest(p, {"epoch": np.int64(2), "w": np.full(3, 2, np.float32)})
    assert int(store.load_once(p)["epoch"]) == 2 and not (tmp_path / "resume.new").exists()
    # killed after the new point was committed, before the swap: the next open finishes it
    store.save_once(tmp_path / "resume.new", {"epoch": np.int64(3), "w": np.zeros(3, np.float32)})
    assert int(store.load_once(p)["epoch"]) == 2
    store.recover_latest(p)
    assert int(store.load_once(p)["epoch"]) == 3 and not (tmp_path / "resume.new").exists()
    np.testing.assert_array_equal(store.load_once(p)["w"], np.zeros(3, np.float32))

"""Tests for ltjax.analysis (ticket anatomy, Frankle & Carbin 2018 sec. 5) and its two figures."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from ltjax import analysis as A
from ltjax import masks as M
from ltjax import plots

T, F = True, False


def _mlp_mask(k1, k2, k3):
    return {
        "fc1": {"kernel": np.array(k1, bool), "bias": None},
        "fc2": {"kernel": np.array(k2, bool), "bias": None},
        "out": {"kernel": np.array(k3, bool), "bias": None},
    }


def _kernels(mask) -> dict[str, np.ndarray]:
    return {n: np.asarray(m) for n, m in M.leaves_with_names(mask)}


# ---------------------------------------------------------------- survivor_init_values


def test_survivor_values_are_theta0_at_mask_positions():
    theta0 = {"fc1": {"kernel": np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]]), "bias": np.array([9.0, 9.0, 9.0])},
              "out": {"kernel": np.array([[0.5], [-0.5], [0.25]]), "bias": np.array([7.0])}}
    mask = {"fc1": {"kernel": np.array([[T, F, T], [F, T, T]]), "bias": None},
            "out": {"kernel": np.array([[F], [T], [F]]), "bias": None}}
    v = A.survivor_init_values(theta0, mask)
    assert set(v) == {"fc1", "out"}  # biases (None mask) are not reported
    assert Counter(v["fc1"].tolist()) == Counter([1.0, 3.0, 5.0, -6.0])
    assert v["out"].tolist() == [-0.5]


def test_survivor_values_pool_over_a_ticket_stack():
    rng = np.random.default_rng(0)
    theta0 = {"fc1": {"kernel": rng.normal(size=(3, 4, 5)), "bias": np.zeros((3, 5))}}
    mask = {"fc1": {"kernel": rng.random((3, 4, 5)) < 0.4, "bias": None}}
    v = A.survivor_init_values(theta0, mask)["fc1"]
    expected = [x for t in range(3) for x in theta0["fc1"]["kernel"][t][mask["fc1"]["kernel"][t]]]
    assert Counter(v.tolist()) == Counter(expected)
    assert v.size == mask["fc1"]["kernel"].sum()


def test_survivor_values_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="does not match"):
        A.survivor_init_values({"fc1": {"kernel": np.zeros((2, 3))}}, {"fc1": {"kernel": np.ones((3, 2), bool)}})


# ---------------------------------------------------------------- prune_dead_edges

# Inputs 3 → fc1 → 3 hidden → fc2 → 2 hidden → out → 2 outputs.


def test_unit_without_outgoing_edges_loses_its_incoming_edges():
    # fc2 unit 1 has incoming edges but no outgoing edge (out row 1 empty) → its fc2 column dies.
    mask = _mlp_mask(
        [[T, F, F], [F, T, F], [F, F, T]],
        [[T, T], [T, F], [F, T]],
        [[T, T], [F, F]],
    )
    k = _kernels(A.prune_dead_edges(mask))
    np.testing.assert_array_equal(k["fc2"], [[T, F], [T, F], [F, F]])
    # fc1 unit 2 only fed fc2 unit 1, which is dead → fc1 column 2 dies too (two layers back).
    np.testing.assert_array_equal(k["fc1"], [[T, F, F], [F, T, F], [F, F, F]])
    np.testing.assert_array_equal(k["out"], mask["out"]["kernel"])  # output edges untouched


def test_dead_chain_propagates_backwards_over_two_layers():
    # Output layer fed only by fc2 unit 0; fc2 unit 1 is dead; fc1 unit 1 feeds only unit 1.
    mask = _mlp_mask(
        [[T, T, F], [T, T, F], [F, T, T]],
        [[T, F], [F, T], [F, F]],
        [[T, F], [F, F]],
    )
    k = _kernels(A.prune_dead_edges(mask))
    np.testing.assert_array_equal(k["out"], [[T, F], [F, F]])
    np.testing.assert_array_equal(k["fc2"], [[T, F], [F, F], [F, F]])
    # Only fc1 unit 0 is alive (feeds alive fc2 unit 0); units 1 and 2 are dead.
    np.testing.assert_array_equal(k["fc1"], [[T, F, F], [T, F, F], [F, F, F]])


def test_output_layer_edges_are_never_removed_and_dead_inputs_are_kept_by_default():
    # fc2 unit 0 has no incoming edges (no path from an input) but feeds the output.
    mask = _mlp_mask(
        [[T, T, T], [T, T, T], [T, T, T]],
        [[F, T], [F, T], [F, T]],
        [[T, T], [T, T]],
    )
    assert all((_kernels(A.prune_dead_edges(mask))[n] == k).all() for n, k in _kernels(mask).items())
    k = _kernels(A.prune_dead_edges(mask, from_inputs=True))
    np.testing.assert_array_equal(k["out"], [[F, F], [T, T]])  # edges out of unreachable unit 0 go
    np.testing.assert_array_equal(k["fc2"], mask["fc2"]["kernel"])
    np.testing.assert_array_equal(k["fc1"], mask["fc1"]["kernel"])


def test_prune_dead_edges_keeps_structure_and_none_leaves():
    mask = _mlp_mask(np.ones((3, 3)), np.ones((3, 2)), np.ones((2, 2)))
    out = A.prune_dead_edges(mask)
    assert jax.tree.structure(out, is_leaf=lambda x: x is None) == jax.tree.structure(mask, is_leaf=lambda x: x is None)
    assert out["fc1"]["bias"] is None and out["out"]["bias"] is None


def _reference(kernels: list[np.ndarray], from_inputs: bool) -> list[np.ndarray]:
    """Graph search: keep edge (l, i, j) iff j reaches an output (and, optionally, an input reaches i)."""
    L = len(kernels)

    def reaches_output(l, j):  # unit j of the output side of layer l
        return l == L - 1 or any(kernels[l + 1][j, k] and reaches_output(l + 1, k)
                                 for k in range(kernels[l + 1].shape[1]))

    def reached_from_input(l, i):  # unit i of the input side of layer l
        return l == 0 or any(kernels[l - 1][h, i] and reached_from_input(l - 1, h)
                             for h in range(kernels[l - 1].shape[0]))

    out = []
    for l, k in enumerate(kernels):
        keep = np.zeros_like(k)
        for i, j in zip(*np.nonzero(k)):
            keep[i, j] = reaches_output(l, j) and (not from_inputs or reached_from_input(l, i))
        out.append(keep)
    return out


@pytest.mark.parametrize("from_inputs", [False, True])
def test_prune_dead_edges_matches_graph_search_on_random_masks(from_inputs):
    rng = np.random.default_rng(1)
    shapes = [(5, 6), (6, 4), (4, 3)]
    fn = jax.jit(lambda m: A.prune_dead_edges(m, from_inputs=from_inputs))
    for trial in range(40):
        p = rng.uniform(0.1, 0.5)
        ks = [rng.random(s) < p for s in shapes]
        got = _kernels(fn(_mlp_mask(*ks)))
        want = _reference(ks, from_inputs)
        for n, w in zip(["fc1", "fc2", "out"], want):
            np.testing.assert_array_equal(got[n], w, err_msg=f"trial {trial}, layer {n}")


def test_prune_dead_edges_on_a_stack_equals_vmap_and_per_ticket():
    rng = np.random.default_rng(2)
    stack = _mlp_mask(rng.random((4, 5, 6)) < 0.3, rng.random((4, 6, 4)) < 0.3, rng.random((4, 4, 3)) < 0.3)
    direct = _kernels(A.prune_dead_edges(stack))
    vmapped = _kernels(jax.vmap(A.prune_dead_edges)(stack))
    for t in range(4):
        one = _kernels(A.prune_dead_edges(jax.tree.map(lambda x: x[t], stack)))
        for n in one:
            np.testing.assert_array_equal(direct[n][t], one[n])
            np.testing.assert_array_equal(vmapped[n][t], one[n])
    # Pruning dead edges only removes edges, and is idempotent.
    again = _kernels(A.prune_dead_edges(A.prune_dead_edges(stack)))
    for n, k in _kernels(stack).items():
        assert not (direct[n] & ~k).any()
        np.testing.assert_array_equal(again[n], direct[n])


def test_layer_order_is_numeric_and_validated():
    assert A.mlp_layer_order(["fc1", "fc10", "fc2", "out"]) == ["fc1", "fc2", "fc10", "out"]
    assert A.display_order(["out", "conv10", "conv2", "conv1"]) == ["conv1", "conv2", "conv10", "out"]
    assert A.display_order(["out", "s2b1/shortcut", "s10b1/conv1", "s2b1/conv1", "conv", "s1b2/conv2"]) == [
        "conv", "s1b2/conv2", "s2b1/conv1", "s2b1/shortcut", "s10b1/conv1", "out"]
    with pytest.raises(ValueError, match="conv1"):
        A.mlp_layer_order(["conv1", "out"])
    mask = _mlp_mask(np.ones((3, 3)), np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="fan_out"):
        A.prune_dead_edges(mask, layer_order=["fc2", "fc1", "out"])
    with pytest.raises(ValueError, match="every prunable layer"):
        A.prune_dead_edges(mask, layer_order=["fc1", "fc2"])


# ---------------------------------------------------------------- incoming_counts


def test_incoming_counts_sum_over_fan_in_sorted_descending():
    mask = _mlp_mask(
        [[T, F, T], [F, F, T], [T, F, T]],  # column sums 2, 0, 3
        [[T, T], [F, T], [F, T]],           # 1, 3
        [[T, F], [T, T]],                   # 2, 1
    )
    c = A.incoming_counts(mask)
    assert [c[n].tolist() for n in ("fc1", "fc2", "out")] == [[3, 2, 0], [3, 1], [2, 1]]
    u = A.incoming_counts(mask, sort=False)
    assert [u[n].tolist() for n in ("fc1", "fc2", "out")] == [[2, 0, 3], [1, 3], [2, 1]]


def test_incoming_counts_per_ticket_and_aggregation():
    k = np.zeros((2, 4, 3), bool)
    k[0, :3, 0] = T; k[0, :1, 2] = T   # ticket 0: counts 3, 0, 1
    k[1, :, 1] = T; k[1, :2, 0] = T    # ticket 1: counts 2, 4, 0
    c = np.asarray(A.incoming_counts({"out": {"kernel": k}})["out"])
    np.testing.assert_array_equal(c, [[3, 1, 0], [4, 2, 0]])
    np.testing.assert_allclose(A.aggregate_counts(c, "mean"), [3.5, 1.5, 0.0])
    np.testing.assert_array_equal(A.aggregate_counts(c, "pool"), [4, 3, 2, 1, 0, 0])
    np.testing.assert_array_equal(A.aggregate_counts(np.array([0, 5, 2])), [5, 2, 0])
    with pytest.raises(ValueError, match="unknown aggregation"):
        A.aggregate_counts(c, "median")


# ---------------------------------------------------------------- density → round


class _Round:
    def __init__(self, index, mask, metrics):
        self.index, self.mask, self.metrics = index, mask, metrics


def _fake_run(rounds=14, tickets=2, widths=(6, 5), n_out=3, n_in=8, seed=0):
    """A Run-like object: IMP masks pruning 20% of each hidden layer and 10% of ``out`` per round.

    Metrics densities follow the nominal 0.8^r / 0.9^r schedule; masks are nested random
    subsets of roughly those densities (plot tests only need them shaped and nested).
    """
    rng = np.random.default_rng(seed)
    dims = [n_in, *widths, n_out]
    names = [f"fc{i + 1}" for i in range(len(widths))] + ["out"]
    theta0 = {n: {"kernel": rng.normal(0, 0.1, (tickets, a, b)).astype(np.float32),
                  "bias": np.zeros((tickets, b), np.float32)}
              for n, a, b in zip(names, dims, dims[1:])}
    scores = {n: rng.random(theta0[n]["kernel"].shape) for n in names}
    rate = {n: (0.1 if n == "out" else 0.2) for n in names}
    runs = []
    for r in range(rounds):
        mask = {n: {"kernel": scores[n] < (1 - rate[n]) ** r + 1e-9, "bias": None} for n in names}
        ld = {n: np.full(tickets, (1 - rate[n]) ** r) for n in names}
        sizes = {n: theta0[n]["kernel"][0].size for n in names}
        glob = sum(ld[n] * sizes[n] for n in names) / sum(sizes.values())
        runs.append(_Round(r, mask, {"density": glob, "layer_density": ld}))
    return SimpleNamespace(theta0=theta0, rounds=runs, config=SimpleNamespace(name="fake", seeds=tickets))


def test_closest_round_in_ratio_with_tolerance():
    d = 0.8 ** np.arange(14)
    assert [A.closest_round(d, t) for t in (1.0, 0.8, 0.512, 0.168, 0.055)] == [0, 1, 3, 8, 13]
    with pytest.raises(ValueError, match="run more rounds"):
        A.closest_round(d[:4], 0.055)
    assert A.closest_round(d[:4], 0.055, rtol=None) == 3
    # Ratio, not difference: 0.22 is 0.12 from 0.1 and 0.18 from 0.4, but 2.2x 0.1 and 0.55x 0.4
    # (|log| 0.79 vs 0.60), so 0.4 is the closer density.
    assert A.closest_round([0.4, 0.1], 0.22, rtol=None) == 0


def test_round_densities_hidden_vs_global():
    # A big output layer makes global density lag the hidden layers': 51.2% hidden is round 3,
    # while by global density the round closest to 51.2% is round 4.
    run = _fake_run(widths=(4,), n_in=3, n_out=3, tickets=1)  # fc1 3x4=12 weights, out 4x3=12 weights
    hidden = A.round_densities(run, "hidden")
    np.testing.assert_allclose(hidden, 0.8 ** np.arange(14))
    glob = A.round_densities(run, "global")
    np.testing.assert_allclose(glob, (0.8 ** np.arange(14) + 0.9 ** np.arange(14)) / 2)
    assert A.select_rounds(run, [0.512], "hidden") == [3]
    assert A.select_rounds(run, [0.512], "global", rtol=None) == [4]
    np.testing.assert_allclose(A.round_densities(run, "out"), 0.9 ** np.arange(14))
    with pytest.raises(ValueError, match="unknown density"):
        A.round_densities(run, "fc9")


def test_hidden_density_is_size_weighted():
    ld = {"fc1": 0.5, "fc2": 1.0, "out": 0.0}
    assert A.layer_densities(ld, {"fc1": 30, "fc2": 10, "out": 5}, ["fc1", "fc2"]) == pytest.approx(25 / 40)


def test_paper_densities_select_paper_rounds():
    run = _fake_run()
    assert A.select_rounds(run, (1.0, 0.8, 0.512, 0.168, 0.055)) == [0, 1, 3, 8, 13]


# ---------------------------------------------------------------- figures


def test_figures_smoke(tmp_path):
    run = _fake_run()
    p9, p10 = tmp_path / "fig9.png", tmp_path / "fig10.png"
    fig9 = plots.survivor_init_histograms(run, path=str(p9))
    fig10 = plots.incoming_connectivity(run, path=str(p10))
    assert p9.stat().st_size > 0 and p10.stat().st_size > 0
    assert len(fig9.axes) == 4 and [len(a.lines) for a in fig9.axes] == [3, 3, 3, 3]
    assert len(fig10.axes) == 3 and [len(a.lines) for a in fig10.axes] == [3, 3, 3]
    # Each line of Figure 10 is the mean sorted incoming count after dead-edge removal.
    want = A.aggregate_counts(A.incoming_counts(A.prune_dead_edges(run.rounds[8].mask))["fc2"])
    np.testing.assert_allclose(fig10.axes[1].lines[1].get_ydata(), want)
    np.testing.assert_allclose(fig10.axes[1].lines[1].get_xdata(), np.arange(5))
    pooled = plots.incoming_connectivity(run, densities=(0.8,), aggregate="pool")
    np.testing.assert_allclose(pooled.axes[0].lines[0].get_xdata(), np.arange(12) / 2)
    with pytest.raises(ValueError, match="run more rounds"):
        plots.survivor_init_histograms(_fake_run(rounds=4))
    import matplotlib.pyplot as plt

    plt.close("all")


def test_layer_collapse_and_common_survivors_by_hand():
    from ltjax.analysis import common_survivors, layer_collapse

    ok = {"fc1": {"kernel": np.array([[1, 0], [0, 0]], bool)}, "out": {"kernel": np.array([[1], [0]], bool)}}
    assert layer_collapse(ok) == {"empty": False, "no_path": False}
    # fc1 keeps only an edge into unit 1, but out keeps only unit 0's edge: no path, no empty layer
    cut = {"fc1": {"kernel": np.array([[0, 1], [0, 0]], bool)}, "out": {"kernel": np.array([[1], [0]], bool)}}
    assert layer_collapse(cut) == {"empty": False, "no_path": True}
    gone = {"fc1": {"kernel": np.zeros((2, 2), bool)}, "out": {"kernel": np.array([[1], [1]], bool)}}
    assert layer_collapse(gone) == {"empty": True, "no_path": True}
    a = {"fc1": {"kernel": np.array([[1, 1], [0, 1]], bool)}, "out": {"kernel": np.array([[1], [1]], bool)}}
    b = {"fc1": {"kernel": np.array([[1, 0], [1, 1]], bool)}, "out": {"kernel": np.array([[1], [0]], bool)}}
    c = common_survivors([a, b])
    assert c["fc1"] == {"common": 2.0, "of_all": 0.5, "of_surviving": 2 / 3}
    assert c["out"] == {"common": 1.0, "of_all": 0.5, "of_surviving": 1 / 1.5}
    assert c["total"]["common"] == 3.0 and c["total"]["of_all"] == 0.5


def test_weight_dynamics_by_hand():
    from ltjax.analysis import weight_dynamics

    w = [np.array([1.0, 2.0, -1.0]), np.array([3.0, -2.0, -1.0]), np.array([5.0, 2.0, 7.0])]
    m = [np.array([1, 1, 1], bool), np.array([1, 1, 0], bool), np.array([1, 1, 0], bool)]
    out = weight_dynamics(w, m, {"a": np.array([1, 0, 0], bool), "b": np.array([0, 1, 1], bool)})
    assert out["a"] == {"n": 1, "mean_std": pytest.approx(np.std([1, 3, 5])), "median_std": pytest.approx(np.std([1, 3, 5])),
                        "mean_flips": 0.0, "flipped_fraction": 0.0}
    # connection 2 survives only round 0: excluded; connection 1 flips sign twice (2 → -2 → 2)
    assert out["b"]["n"] == 1 and out["b"]["mean_flips"] == 2.0 and out["b"]["flipped_fraction"] == 1.0
    assert out["b"]["mean_std"] == pytest.approx(np.std([2, -2, 2]))


def test_survival_by_hand():
    from ltjax.analysis import survival

    common = {"a": {"kernel": np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)}}
    new = {"a": {"kernel": np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)}}
    s = survival(common, new)["a"]
    assert s["common"] == 4 and s["survived"] == 3 and s["fraction"] == 0.75 and s["expected"] == 0.5


def test_survival_leaves_out_unpruned_layers():
    from ltjax.analysis import survival

    common = {"a": {"kernel": np.array([1, 1, 0, 0], bool)}, "out": {"kernel": np.ones(4, bool)}}
    new = {"a": {"kernel": np.array([1, 0, 0, 1], bool)}, "out": {"kernel": np.ones(4, bool)}}
    every = survival(common, new)
    assert every["total"]["common"] == 6 and every["total"]["survived"] == 5
    s = survival(common, new, exclude=("o*",))
    assert set(s) == {"a", "total"}
    assert s["total"] == s["a"] and s["total"]["fraction"] == 0.5 and s["total"]["expected"] == 0.5

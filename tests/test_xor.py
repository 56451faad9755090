"""The XOR study (ltjax.xor): unit scores and unit pruning on a hand-built network, one-shot
and iterative protocols, reset to θ0, the two success criteria, and a small end-to-end run."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import masks as M
from ltjax import models
from ltjax import xor as X

# Hand-built 2-4-1 network. Per unit j (columns of W1, rows of w2):
#   Σ_i |W1[i, j]|       = 4.0, 0.6, 1.0, 0.1   → input magnitude (mean) = 2.0, 0.3, 0.5, 0.05
#   |w2[j]|              = 0.1, 2.0, 3.0, 5.0   → output magnitude
#   |w2[j]| · Σ|W1[:,j]| = 0.4, 1.2, 3.0, 0.5   → magnitude product
W1 = np.array([[1.0, -0.2, 0.5, 0.0],
               [-3.0, 0.4, 0.5, 0.1]], np.float32)
W2 = np.array([[0.1], [-2.0], [3.0], [5.0]], np.float32)
HAND = {"fc1": {"kernel": jnp.asarray(W1), "bias": jnp.zeros(4)},
        "out": {"kernel": jnp.asarray(W2), "bias": jnp.zeros(1)}}
HAND_SCORES = {
    "input_magnitude": [2.0, 0.3, 0.5, 0.05],
    "output_magnitude": [0.1, 2.0, 3.0, 5.0],
    "magnitude_product": [0.4, 1.2, 3.0, 0.5],
}
# Units left after removing the 2 lowest-scoring of the 4, by hand from the scores above.
HAND_SURVIVORS_OF_2 = {
    "input_magnitude": [0, 2],    # removes 3 (0.05) and 1 (0.3)
    "output_magnitude": [2, 3],   # removes 0 (0.1) and 1 (2.0)
    "magnitude_product": [1, 2],  # removes 0 (0.4) and 3 (0.5)
}
HAND_SURVIVORS_OF_1 = {"input_magnitude": [0, 1, 2], "output_magnitude": [1, 2, 3], "magnitude_product": [1, 2, 3]}


def _full_mask(params):
    return M.make_mask(params, lambda p, x: M.path_str(p).endswith("kernel"))


def _stack(tree, T):
    return jax.tree.map(lambda a: None if a is None else jnp.stack([a] * T), tree, is_leaf=lambda x: x is None)


# -- unit scores and pruning ---------------------------------------------------------------

@pytest.mark.parametrize("heuristic", X.HEURISTICS)
def test_unit_scores_match_hand_computation(heuristic):
    np.testing.assert_allclose(X.unit_scores(HAND, heuristic), HAND_SCORES[heuristic], rtol=1e-6)


def test_unknown_heuristic_names_the_valid_ones():
    with pytest.raises(ValueError, match="input_magnitude, output_magnitude, magnitude_product"):
        X.unit_scores(HAND, "l2")


@pytest.mark.parametrize("k, expected", [(1, HAND_SURVIVORS_OF_1), (2, HAND_SURVIVORS_OF_2)])
@pytest.mark.parametrize("heuristic", X.HEURISTICS)
def test_prune_step_removes_the_hand_computed_units(heuristic, k, expected):
    mask = X.prune_step(_stack(HAND, 1), _stack(_full_mask(HAND), 1), heuristic, k)
    alive = np.flatnonzero(np.asarray(X.alive_units(jax.tree.map(lambda a: a[0], mask))))
    assert alive.tolist() == expected[heuristic]


def test_prune_units_ties_remove_lower_index_and_skip_dead_units():
    alive = jnp.array([True] * 4)
    assert X.prune_units(jnp.ones(4), alive, 2).tolist() == [False, False, True, True]
    # Unit 0 is already dead (its score, the lowest, must not use up the budget); 2 and 3 tie.
    alive = jnp.array([False, True, True, True])
    assert X.prune_units(jnp.array([0.0, 5.0, 1.0, 1.0]), alive, 1).tolist() == [False, True, False, True]
    assert X.prune_units(jnp.array([0.0, 5.0, 1.0, 1.0]), alive, 0).tolist() == alive.tolist()


def test_prune_units_refuses_more_than_alive():
    with pytest.raises(ValueError, match="only 2 are alive"):
        X.prune_units(jnp.ones(4), jnp.array([True, False, True, False]), 3)


def test_prune_step_refuses_more_than_the_fewest_alive():
    mask = _stack(X.unit_mask(_full_mask(HAND), jnp.array([True, False, True, False])), 3)
    with pytest.raises(ValueError, match="only 2 alive"):
        X.prune_step(_stack(HAND, 3), mask, "magnitude_product", 3)


def test_pruned_unit_weights_are_ignored_by_scores():
    """A removed unit's stale (nonzero) trained weights must not revive it or use up the budget."""
    mask = X.unit_mask(_full_mask(HAND), jnp.array([True, True, True, False]))
    new = X.prune_step(_stack(HAND, 1), _stack(mask, 1), "output_magnitude", 1)  # unit 3 has |w2| = 5
    assert np.asarray(X.alive_units(jax.tree.map(lambda a: a[0], new))).tolist() == [False, True, True, False]


def test_masks_remove_whole_units_only_shrink_and_leave_biases_alone():
    T, model = 6, X.network(10)
    params = models.run_init(jax.vmap(model.init), jax.random.split(jax.random.PRNGKey(3), T))
    mask = jax.vmap(_full_mask)(params)
    prev = np.ones((T, 10), bool)
    for heuristic, k in [("magnitude_product", 3), ("input_magnitude", 2), ("output_magnitude", 4)]:
        mask = X.prune_step(params, mask, heuristic, k)
        fc1, out = np.asarray(mask["fc1"]["kernel"]), np.asarray(mask["out"]["kernel"])
        assert mask["fc1"]["bias"] is None and mask["out"]["bias"] is None
        assert (fc1 == fc1[:, :1, :]).all(), "an incoming column is partly pruned"
        assert (fc1[:, 0, :] == out[:, :, 0]).all(), "incoming and outgoing weights of a unit disagree"
        alive = fc1[:, 0, :]
        assert not (alive & ~prev).any(), "a removed unit came back"
        prev = alive
    assert (X.num_alive(mask) == 10 - 3 - 2 - 4).all()


def test_pruned_10_unit_network_computes_exactly_the_2_unit_network():
    """Masked 10-unit forward = 2-unit network of the survivors, also with nonzero hidden biases."""
    big, small = X.network(10), X.network(2)
    params = big.init(jax.random.PRNGKey(0))
    params["fc1"]["bias"] = jnp.linspace(-0.3, 0.4, 10)
    params["out"]["bias"] = jnp.array([0.2])
    keep = np.array([3, 7])
    alive = jnp.zeros(10, bool).at[keep].set(True)
    masked = M.apply_mask(params, X.unit_mask(_full_mask(params), alive))
    sliced = {"fc1": {"kernel": params["fc1"]["kernel"][:, keep], "bias": params["fc1"]["bias"][keep]},
              "out": {"kernel": params["out"]["kernel"][keep], "bias": params["out"]["bias"]}}
    x, _ = X.xor_data()
    np.testing.assert_allclose(big.apply(masked, x), small.apply(sliced, x), rtol=0, atol=1e-7)


# -- protocols: counts, reset to θ0 ----------------------------------------------------------

class _RecordingTrain:
    """Stand-in trainer that records its inputs and 'trains' to θ ⊙ mask."""

    def __init__(self):
        self.calls = []

    def __call__(self, params, mask):
        self.calls.append((params, mask))
        return M.apply_mask(params, mask)


def _theta0(T=5, h=10, seed=1):
    model = X.network(h)
    return X.init_trials(model, jax.random.PRNGKey(seed), T)


def _flip_units(params):
    """Reverse the order of the hidden units (θ0 of unit j moves to unit h-1-j)."""
    return {"fc1": {"kernel": params["fc1"]["kernel"][..., ::-1], "bias": params["fc1"]["bias"][..., ::-1]},
            "out": {"kernel": params["out"]["kernel"][:, ::-1], "bias": params["out"]["bias"]}}


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_shot_prunes_once_per_target_and_trains_from_theta0():
    theta0, mask0, _ = _theta0()
    trained = _flip_units(theta0)  # stands for the trained dense network: a different unit ranking
    train = _RecordingTrain()
    tickets = X.one_shot(train, theta0, mask0, trained, "magnitude_product", (4, 2))
    by_trained = X.prune_step(trained, mask0, "magnitude_product", 8)
    assert _same(tickets[2].mask, by_trained) and not _same(by_trained, X.prune_step(theta0, mask0, "magnitude_product", 8))
    assert sorted(tickets) == [2, 4] and len(train.calls) == 2
    assert [X.num_alive(m).tolist() for _, m in train.calls] == [[4] * 5, [2] * 5]
    for params, _ in train.calls:
        assert _same(params, theta0), "a ticket did not start from θ0"
    # The 2-unit ticket's units are a subset of the 4-unit ticket's (same scores, fewer kept).
    a4 = np.asarray(jax.vmap(X.alive_units)(tickets[4].mask))
    a2 = np.asarray(jax.vmap(X.alive_units)(tickets[2].mask))
    assert not (a2 & ~a4).any()


def test_iterative_removes_two_units_per_round_and_resets_each_round():
    theta0, mask0, _ = _theta0()
    trained = _flip_units(theta0)
    train = _RecordingTrain()
    tickets = X.iterative(train, theta0, mask0, trained, "input_magnitude", (4, 2))
    assert sorted(tickets) == [2, 4]
    assert [X.num_alive(m).tolist() for _, m in train.calls] == [[8] * 5, [6] * 5, [4] * 5, [2] * 5]
    for params, _ in train.calls:
        assert _same(params, theta0)
    # Round 1 scores the trained dense network; round r+1 scores round r's trained ticket.
    masks = [mask0] + [m for _, m in train.calls]
    scored = [trained] + [M.apply_mask(theta0, m) for m in masks[1:]]
    for r in range(4):
        assert _same(masks[r + 1], X.prune_step(scored[r], masks[r], "input_magnitude", 2))
    assert _same(tickets[2].mask, train.calls[-1][1]) and _same(tickets[4].mask, train.calls[2][1])


@pytest.mark.parametrize("heuristic", X.HEURISTICS)
def test_iterative_equals_one_shot_when_training_changes_nothing(heuristic):
    """If 'training' returns θ0 ⊙ mask, repeatedly removing the 2 lowest survivors removes the
    8 lowest overall: iterative and one-shot must choose the same units."""
    theta0, mask0, _ = _theta0(T=16)
    it = X.iterative(_RecordingTrain(), theta0, mask0, theta0, heuristic, (2,))
    os_ = X.one_shot(_RecordingTrain(), theta0, mask0, theta0, heuristic, (2,))
    assert _same(it[2].mask, os_[2].mask)


def test_iterative_rejects_unreachable_targets():
    theta0, mask0, _ = _theta0(T=2)
    with pytest.raises(ValueError, match=r"targets \[3\]"):
        X.iterative(_RecordingTrain(), theta0, mask0, theta0, "magnitude_product", (3,))


# -- success criteria -------------------------------------------------------------------------

Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize("logits, db, zl", [
    ([-10.0, 10.0, 10.0, -10.0], True, True),      # hard 0/1: BCE = log(1+e^-10) ≈ 4.5e-5 per point
    ([-1.0, 1.0, 1.0, -1.0], True, False),         # right side of 0.5 everywhere, BCE ≈ 0.31
    ([-10.0, 10.0, 10.0, 0.0], False, False),      # output exactly 0.5 at (1,1): on neither side
    ([-10.0, 10.0, -10.0, -10.0], False, False),   # (1,0) misclassified
    ([10.0, -10.0, -10.0, 10.0], False, False),    # every point wrong, confidently
    ([-7.0, 7.0, 7.0, -7.0], True, True),          # BCE ≈ 9.1e-4 ≤ 1e-3
    ([-7.0, 7.0, 6.0, -7.0], True, False),         # one point at BCE ≈ 2.5e-3 > 1e-3
])
def test_success_criteria_on_hand_made_logits(logits, db, zl):
    z = jnp.asarray(logits)
    assert bool(X.decision_boundary_correct(z, Y)) is db
    assert bool(X.zero_loss(z, Y)) is zl


def test_per_point_loss_is_bce_and_criteria_batch():
    z = jnp.array([[-2.0, 0.5, 3.0, 1.0], [-10.0, 10.0, 10.0, -10.0]])
    p = 1 / (1 + np.exp(-np.asarray(z, np.float64)))
    bce = -(Y * np.log(p) + (1 - Y) * np.log(1 - p))
    np.testing.assert_allclose(X.per_point_loss(z, Y), bce, rtol=1e-5)
    assert X.decision_boundary_correct(z, Y).tolist() == [False, True]
    assert X.zero_loss(z, Y).tolist() == [False, True]
    assert X.zero_loss(z, Y, threshold=2.0).tolist() == [True, True]


def test_footnote_2_network_succeeds_on_both_criteria():
    """The paper's hand-made solution: W1 = [[n, -n], [-n, n]], w2 = [1, 1], output bias -n/2;
    its outputs approach hard 0/1 as n grows."""
    model = X.network(2)

    def net(n):
        return {"fc1": {"kernel": jnp.array([[n, -n], [-n, n]]), "bias": jnp.zeros(2)},
                "out": {"kernel": jnp.ones((2, 1)), "bias": jnp.array([-n / 2])}}

    ok = X.success(model, _stack(net(1.0), 1))
    assert ok.db.tolist() == [True] and ok.zl.tolist() == [False]      # logits ±0.5
    ok = X.success(model, _stack(net(20.0), 1))
    assert ok.db.tolist() == [True] and ok.zl.tolist() == [True]       # logits ±10


# -- end to end: the real trainer ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dense_run():
    T, model = 32, X.network(10)
    theta0, mask, keys = X.init_trials(model, jax.random.PRNGKey(0), T)
    train = X.make_train_fn(model, iterations=2000)
    return model, theta0, mask, train, train(theta0, mask)


def test_dense_10_unit_network_finds_the_boundary_in_most_trials(dense_run):
    model, *_, trained = dense_run
    ok = X.success(model, trained)
    assert np.mean(ok.db) >= 0.75, f"only {np.mean(ok.db):.0%} of 32 dense networks found the boundary"


def test_iterative_tickets_train_from_theta0_with_removed_units_frozen_at_zero(dense_run):
    model, theta0, mask, train, trained = dense_run
    tickets = X.iterative(train, theta0, mask, trained, "magnitude_product", (2,))
    ticket = tickets[2]
    alive = np.asarray(jax.vmap(X.alive_units)(ticket.mask))
    assert (alive.sum(1) == 2).all()
    w1, w2 = np.asarray(ticket.params["fc1"]["kernel"]), np.asarray(ticket.params["out"]["kernel"])
    b1 = np.asarray(ticket.params["fc1"]["bias"])
    assert (w1[~np.broadcast_to(alive[:, None, :], w1.shape)] == 0).all()
    assert (w2[:, :, 0][~alive] == 0).all()
    assert (b1[~alive] == 0).all(), "a removed unit's bias moved: it must get zero gradient"
    # The tickets beat random 2-unit networks (about 19% at full length) by a wide margin.
    ok = X.success(model, ticket.params)
    assert np.mean(ok.db) >= 0.5, f"only {np.mean(ok.db):.0%} of 2-unit tickets found the boundary"


def test_training_a_ticket_equals_training_the_small_network(dense_run):
    """Reset exactness end to end: retraining the 10-wide masked ticket from θ0 gives the same
    function as training a 2-unit network initialized with the survivors' θ0 values."""
    model, theta0, mask, train, trained = dense_run
    T = 4
    sub = lambda t: jax.tree.map(lambda a: a[:T], t)  # noqa: E731
    new_mask = X.prune_step(sub(trained), sub(mask), "magnitude_product", 8)
    big = X.make_train_fn(model, iterations=500)(sub(theta0), new_mask)
    idx = np.stack([np.flatnonzero(a) for a in np.asarray(jax.vmap(X.alive_units)(new_mask))])  # (T, 2)
    th = jax.tree.map(np.asarray, sub(theta0))
    small_theta = {
        "fc1": {"kernel": np.take_along_axis(th["fc1"]["kernel"], idx[:, None, :], 2),
                "bias": np.take_along_axis(th["fc1"]["bias"], idx, 1)},
        "out": {"kernel": np.take_along_axis(th["out"]["kernel"], idx[:, :, None], 1), "bias": th["out"]["bias"]},
    }
    small_model = X.network(2)
    small_mask = jax.vmap(_full_mask)(small_theta)
    small = X.make_train_fn(small_model, iterations=500)(small_theta, small_mask)
    np.testing.assert_allclose(X.logits_on_xor(model, big), X.logits_on_xor(small_model, small), atol=1e-5)


# -- the fast full-batch trainer against the general one ----------------------------------------

def _general(model, theta0, mask, steps):
    from ltjax import data as D
    from ltjax.train import TrainSpec, device_data, make_trainer

    spec = TrainSpec(optimizer="sgd", lr=X.LEARNING_RATE, batch_size=4, eval_every=steps)
    keys = jax.random.split(jax.random.PRNGKey(5), len(jax.tree.leaves(theta0)[0]))
    return make_trainer(model, spec, (0.0,), (1.0,))(theta0, mask, keys, device_data(D.load("xor")), 0, steps)[0]


@pytest.mark.parametrize("kind", ["dense", "units", "weights"])
def test_fast_trainer_computes_what_the_general_trainer_does(kind):
    """``make_train_fn`` (trial-last arrays, hand-written gradient, alive units only) against
    ltjax.train's masked trainer on the same full batches, for 10 steps: equal to 1e-6. Why a
    tolerance: the two sum the four points' and the units' terms in different orders (float32
    reassociation, ~1e-7 per step); the general trainer itself differs from itself by as much
    when only its (irrelevant) data order changes. Exact: pruned weights 0, removed units' biases."""
    T, model = 16, X.network(10)
    theta0, mask, _ = X.init_trials(model, jax.random.PRNGKey(3), T)
    theta0 = {**theta0, "fc1": {**theta0["fc1"], "bias": jnp.full((T, 10), 0.05)}}  # nonzero biases
    if kind == "units":
        mask = X.prune_step(theta0, mask, "magnitude_product", 7)
    elif kind == "weights":  # not a unit mask: the masked path trains all units
        r = jax.random.bernoulli(jax.random.PRNGKey(4), 0.6, mask["fc1"]["kernel"].shape)
        mask = {**mask, "fc1": {**mask["fc1"], "kernel": r}}
    fast = X.make_train_fn(model, iterations=10)(theta0, mask)
    ref = _general(model, theta0, mask, 10)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    moved = np.abs(np.asarray(fast["fc1"]["kernel"]) - np.asarray(theta0["fc1"]["kernel"])).max()
    assert moved > 1e-3  # it trained
    for layer in ("fc1", "out"):
        m = np.asarray(mask[layer]["kernel"])
        assert (np.asarray(fast[layer]["kernel"])[~m] == 0).all()
    if kind == "units":
        dead = ~np.asarray(jax.vmap(X.alive_units)(mask))
        assert (np.asarray(fast["fc1"]["bias"])[dead] == 0.05).all()  # no gradient reaches them


def test_fast_trainer_refuses_another_network():
    model = X.network(4)
    theta0, mask, _ = X.init_trials(model, jax.random.PRNGKey(0), 2)
    wide = {**theta0, "extra": {"kernel": jnp.zeros((2, 4, 4))}}
    with pytest.raises(ValueError, match="stacks of network\\(h\\) params"):
        X.make_train_fn(model)(wide, {**mask, "extra": {"kernel": jnp.ones((2, 4, 4), bool)}})


def test_init_trials_is_model_init_of_each_trials_key():
    """θ0 of trial t is model.init(split(key, T)[t]) bit for bit, although init_trials compiles
    its program at a lower XLA:CPU optimization level (to compile faster)."""
    model = X.network(6)
    theta0, mask, keys = X.init_trials(model, jax.random.PRNGKey(11), 50)
    assert np.array_equal(keys, jax.random.split(jax.random.PRNGKey(11), 50))
    for t in (0, 17, 49):
        one = model.init(keys[t])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(jax.tree.map(lambda a: a[t], theta0))):
            np.testing.assert_array_equal(a, b)
    assert mask["fc1"]["kernel"].shape == (50, 2, 6) and mask["fc1"]["kernel"].all() and mask["fc1"]["bias"] is None


# -- the study's run directory: named, hashed parts, resumed -------------------------------------

TINY = X.StudySettings(trials=8, iterations=40)


def _counting_train_fns(monkeypatch):
    """Count the training programs the study asks for (each part builds its own)."""
    calls, make = [], X.make_train_fn
    monkeypatch.setattr(X, "make_train_fn", lambda *a, **k: calls.append(k.get("lr")) or make(*a, **k))
    return calls


def test_study_parts_are_kept_and_a_second_call_recomputes_nothing(tmp_path, monkeypatch):
    calls = _counting_train_fns(monkeypatch)
    d = X.open_run(TINY, tmp_path)
    assert d.name.startswith("frankle2018_xor-") and (d / "settings.json").exists()
    dense = {h: X.dense_part(d, TINY, h) for h in (2, 10)}
    sweep = X.dense_part(d, TINY, 10, lr=0.3)
    pruned = {p: X.prune_part(d, TINY, p, "magnitude_product", t) for p, t in (("one_shot", (2,)),
                                                                             ("iterative", (8, 6, 4, 2)))}
    assert len(calls) == 5 and (d / "dense_010").exists()  # the pruned width's trained networks, kept
    assert list(pruned["iterative"]["tickets"]) == ["8", "6", "4", "2"] and len(dense[2]["db_trials"]) == 8
    assert sweep != dense[10]  # another lr is another part
    # the kept parts are what the computation gives: a fresh directory that trains the 10-unit
    # networks inside the pruning part (no dense_010 kept) makes the same tickets
    other = X.open_run(TINY, tmp_path / "other")
    assert X.prune_part(other, TINY, "iterative", "magnitude_product", (8, 6, 4, 2))["tickets"] == \
        pruned["iterative"]["tickets"]
    calls.clear()
    assert X.open_run(TINY, tmp_path) == d
    assert {h: X.dense_part(d, TINY, h) for h in (2, 10)} == dense and X.dense_part(d, TINY, 10, lr=0.3) == sweep
    assert X.prune_part(d, TINY, "one_shot", "magnitude_product", (2,)) == pruned["one_shot"]
    assert calls == []  # nothing trained again


def test_a_study_interrupted_between_parts_computes_only_the_missing_ones(tmp_path, monkeypatch):
    d = X.open_run(TINY, tmp_path)
    jobs = [("one_shot", "input_magnitude", (2,)), ("one_shot", "output_magnitude", (2,)),
            ("iterative", "output_magnitude", (8, 6, 4, 2))]
    prune = X.prune_study

    def dies_on_the_second(*a, **k):
        if a[5] == "output_magnitude":
            raise KeyboardInterrupt("killed")
        return prune(*a, **k)

    monkeypatch.setattr(X, "prune_study", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        for job in jobs:
            X.prune_part(d, TINY, *job)
    assert len(list((d / "parts").glob("prune-*.json"))) == 1
    monkeypatch.setattr(X, "prune_study", prune)
    calls = _counting_train_fns(monkeypatch)
    done = [X.prune_part(d, TINY, *job) for job in jobs]
    assert len(calls) == 2 and all(set(p["tickets"]) >= {"2"} for p in done)


def test_another_setting_is_another_run_directory_and_a_changed_record_is_refused(tmp_path):
    d = X.open_run(TINY, tmp_path)
    assert X.open_run(TINY._replace(trials=16), tmp_path) != d
    assert X.open_run(TINY._replace(lr=0.5), tmp_path) != d
    (d / "settings.json").write_text(json.dumps({**TINY._asdict(), "trials": 9}))
    with pytest.raises(ValueError, match="holds a frankle2018_xor study with settings"):
        X.open_run(TINY, tmp_path)


def test_experiment_builds_results_from_the_parts_and_recomputes_nothing_the_second_time(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    import frankle2018_xor as script

    args = ["x", "--trials", "8", "--iterations", "40", "--runs", str(tmp_path / "runs")]
    monkeypatch.setattr(sys, "argv", [*args, "--out", str(tmp_path / "a")])
    script.main()
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [r["protocol"] for r in first["figure2"]] == ["one_shot"] * 3 + ["iterative"] * 3
    assert list(first["figure2"][3]) == ["protocol", "heuristic", "10", "8", "6", "4", "2", "seconds"]

    def no_training(*a, **k):
        raise AssertionError("a finished part was computed again")

    monkeypatch.setattr(X, "make_train_fn", no_training)
    monkeypatch.setattr(sys, "argv", [*args, "--out", str(tmp_path / "b")])
    script.main()
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    first.pop("runtime_s"), again.pop("runtime_s")
    assert again == first

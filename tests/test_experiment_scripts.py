"""The experiment scripts of the LTH-vs-SNIP report and the layerwise-importance and
early-ticket papers, end to end at toy size on real MNIST: the study, its JSON, its figures
and the results page built from it."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import early_tickets  # noqa: E402
import early_tickets_report  # noqa: E402
import frankle2020_lmc_report as lmc_report  # noqa: E402
import layerwise_importance as li  # noqa: E402
import layerwise_importance_report as li_report  # noqa: E402
import lth_vs_snip  # noqa: E402
import lth_vs_snip_report  # noqa: E402
import renda2020_lr_rewinding as renda  # noqa: E402
import renda2020_lr_rewinding_report as renda_report  # noqa: E402


def _quiet(_):
    pass


def test_layerwise_importance_study_partial_reinit_and_page(tmp_path, monkeypatch):
    from ltjax import lottery

    cfg = li.study_config("lenet_mnist_openlth")[0].replace(scores=("magnitude", "l2"), seeds=1, iterations=469,
                                                            rounds=3)
    run = lottery.run(cfg, tmp_path / "runs", progress=False, log=_quiet)
    res = li.summarize(run)
    res["figure2"] = li.figure2(run)
    res["paper"] = li.PAPER["lenet_mnist_openlth"]
    out = tmp_path / "results"
    out.mkdir()
    (out / "lenet_table2.json").write_text(json.dumps(res))
    li.plot(res, out / "lenet_table2.png")
    li.plot_layers(res, out / "lenet_table2_layers.png", (1, 2))
    assert (out / "lenet_table2.png").stat().st_size > 0 and (out / "lenet_table2_layers.png").stat().st_size > 0
    assert set(res["rows"][2]["common_across_scores"]) == {"fc1", "fc2", "out", "total"}
    pr = li.partial_reinit(cfg, str(tmp_path / "runs"), 2)
    for s in ("magnitude", "l2"):
        layers = pr["scores"][s]["layers"]
        # expected = the new ticket's layer density; survived fraction is a fraction of the kept θ0 weights
        new = lottery.store.load_run(pr["run_dir"]).rounds[2].metrics["layer_density"]
        t = cfg.ticket_scores().index(s)
        for layer in ("fc1", "fc2"):
            assert layers[layer]["expected"] == pytest.approx(float(np.asarray(new[layer])[t]), abs=1e-6)
            assert 0 <= layers[layer]["fraction"] <= 1 and layers[layer]["common"] > 0
    (out / "lenet_table2_partial_reinit.json").write_text(json.dumps(pr))
    (out / "resnet20_cifar10_ltr_smoke.json").write_text(json.dumps(res))  # stands in for a smoke run
    page = tmp_path / "page.md"
    monkeypatch.setattr(sys, "argv", ["x", "--results", str(out), "--out", str(page)])
    li_report.main()
    text = page.read_text()
    assert "Table 2(a)" in text and "Partial reinitialization" in text and "| `vgg16_cifar10_ltr` |" in text
    assert "98.11" in text  # the paper's dense accuracy beside ours


def test_early_tickets_script_and_page(tmp_path, monkeypatch):
    for preset in ("lenet_mnist_early", "conv2_fashion_mnist_early", "resnet20_cifar10_early"):
        cfg, s, tag = early_tickets.plan(preset, quick=False, smoke=False, seeds=None)
        E = cfg.iterations // cfg.eval_every
        assert max(s["prune_epochs"]) == E and all(1 <= e <= E for e in s["prune_epochs"])
        assert s["rewind_epochs"][0] == 0 and all(0 <= a < b <= E for a, b in s["windows"])
    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["x", "--quick", "--seeds", "1", "--parts", "baseline,earlybird",
                                      "--runs", str(tmp_path / "runs"), "--out", str(out)])
    early_tickets.main()
    res = json.loads((out / "lenet_mnist_early_quick.json").read_text())
    assert res["epochs"] == 4 and len(res["hamming"]) == 5 and res["exclude"] == ["out"]
    assert res["baseline"]["test_acc"][-1] > 0.95  # real MNIST
    assert len(res["earlybird"]["epoch"]) == 1
    # a second sitting runs another part and keeps the first one's
    monkeypatch.setattr(sys, "argv", ["x", "--quick", "--seeds", "1", "--parts", "baseline,ppr",
                                      "--runs", str(tmp_path / "runs"), "--out", str(out)])
    early_tickets.main()
    both = json.loads((out / "lenet_mnist_early_quick.json").read_text())
    assert both["earlybird"] == res["earlybird"] and both["baseline"] == res["baseline"]
    assert both["ppr"]["epochs"] == [1, 2, 3, 4]
    page = tmp_path / "page.md"
    monkeypatch.setattr(sys, "argv", ["x", "--results", str(out), "--out", str(page)])
    early_tickets_report.main()
    text = page.read_text()
    assert "LeNet-300-100 / MNIST, 80% pruned (quick)" in text and "Early-bird detection" in text and "0.159" in text
    assert "**Not run yet:** grid, memorization, gradual." in text  # and the command that adds them
    assert "--preset lenet_mnist_early --quick --parts grid,memorization`" in text


def test_early_tickets_keeps_earlier_parts_only_of_the_same_study():
    base = {"preset": "p", "config": {"lr": 0.1}, "settings": {"w": 3}, "rate": 0.8, "exclude": ["out"],
            "tag": "p", "baseline": {"test_acc": [0.0, 0.9]}}
    earlier = {**base, "grid": {"g": 1}, "earlybird": {"e": 1}, "ppr": {"old": 1}}
    now = {**base, "ppr": {"new": 1}}
    merged = early_tickets.keep_earlier_parts(now, earlier)
    assert merged["grid"] == {"g": 1} and merged["earlybird"] == {"e": 1} and merged["ppr"] == {"new": 1}
    assert early_tickets.keep_earlier_parts(now, None) == now
    other = {**now, "config": {"lr": 0.2}}
    assert "grid" not in early_tickets.keep_earlier_parts(other, earlier)  # another study: replaced
    drifted = {**now, "baseline": {"test_acc": [0.0, 0.91]}}
    with pytest.raises(SystemExit, match="different baseline"):
        early_tickets.keep_earlier_parts(drifted, earlier)


def test_lth_vs_snip_script_flip_rows_and_page(tmp_path, monkeypatch):
    out, runs = tmp_path / "results", str(tmp_path / "runs")
    common = ["--quick", "--seeds", "1", "--iterations", "500", "--runs", runs, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["x", "compare", "--rounds", "2", *common])
    lth_vs_snip.main()
    page = tmp_path / "page.md"
    monkeypatch.setattr(sys, "argv", ["x", "--results", str(out), "--out", str(page)])
    lth_vs_snip_report.main()
    text = page.read_text()
    assert "LTH vs SNIP vs iterative SNIP" in text and "Table 2) has not been run for this preset yet" in text

    monkeypatch.setattr(sys, "argv", ["x", "flip", "--flip-rows", "3", *common])
    lth_vs_snip.main()
    res = json.loads((out / "lenet_mnist_lth_snip_flip.json").read_text())
    assert res["flip_rows"] == 3
    for k in ("flip_from_7", "flip_from_8"):
        # rows 1..3 of each flip run, nothing after; the flipped masks share no weight with m
        assert [r[k]["shared_with_flipped"] for r in res["rows"] if k in r] == [0, 0, 0]
        assert [r["row"] for r in res["rows"] if k in r] == [1, 2, 3]
    monkeypatch.setattr(sys, "argv", ["x", "--results", str(out), "--out", str(page)])
    lth_vs_snip_report.main()
    text = page.read_text()
    assert "then 2 more LTH rounds give mask s (the report: 9)" in text and "has not been run" not in text

    monkeypatch.setattr(sys, "argv", ["x", "flip", "--flip-rows", "11", *common])
    with pytest.raises(SystemExit, match="--flip-rows must be between 1 and 10"):
        lth_vs_snip.main()


def test_renda2020_page_says_whether_lr_rewinding_beats_weight_rewinding(tmp_path):
    """The results page and figure from a made-up study (no training): the verdict follows the
    gaps between the strategies' mean accuracies over the pruned rounds."""
    def rows(accs):
        return [{"round": i, "density": 0.8 ** i, "final_test_acc": [a - 0.001, a + 0.001], "diverged": 0,
                 "mean": a, "min": a - 0.001, "max": a + 0.001, "seconds": 60.0} for i, a in enumerate(accs)]

    cfg = renda.study_configs("lenet_mnist_openlth", 2, 938, (469,), 3, 469, 0)["rewind"].to_dict()
    for lr_rewind, verdict in (([0.97, 0.975, 0.976], "holds here"), ([0.97, 0.96, 0.95], "does not hold here")):
        res = {"preset": "lenet_mnist_openlth", "config": cfg, "strategies": {
            "rewind": {"rows": rows([0.97, 0.971, 0.972])}, "lr_rewind": {"rows": rows(lr_rewind)},
            "finetune": {"rows": rows([0.97, 0.965, 0.96])}}}
        renda.plot(res, tmp_path / "fig.png")
        text = renda_report.page(res, "fig.png")
        assert f"weight rewinding\" {verdict}" in text, text
        assert "retrains for **938 iterations**" in text and "| 2 | 64.00 | 97.20 (97.10–97.30) |" in text
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_lmc_page_reads_stability_off_the_barriers(tmp_path):
    """The instability page and figures from made-up analyses (no training): a dense network is
    called stable from the first k after which every barrier stays under 2 points, and each IMP
    strategy lists the densities where it is not."""
    alphas = [i / 4 for i in range(5)]

    def dense(barriers):
        errors = [[0.1, 0.1 + b / 2, 0.1 + b, 0.1 + b / 2, 0.1] for b in barriers]
        return {"k": [0, 100, 500], "alphas": alphas, "test_error": errors, "train_error": errors,
                "test_instability": barriers, "train_instability": barriers, "iterations": 5000, "wall_seconds": 9.0}

    def imp(barriers, acc):
        return {"rounds": [0, 1, 2], "density": [1.0, 0.8, 0.64], "test_instability": barriers,
                "copies_test_acc": acc, "imp_seconds": 5.0, "seconds": 7.0}

    settings = {"lenet_iterations": 5000, "bn_iterations": 1200, "bn_batches": 30, "bn_train_examples": 2000,
                "rounds": 3, "rewind": 100}
    res = {"settings": settings, "dense_lenet": dense([0.001, 0.002, 0.0]), "dense_bn": dense([0.3, 0.05, 0.01]),
           "imp_lenet": {"reset": imp([0.0, 0.01, 0.03], [0.98, 0.981, 0.97]),
                         "rewind": imp([0.0, 0.0, 0.01], [0.98, 0.982, 0.979]),
                         "random": imp([0.0, 0.05, 0.2], [0.98, 0.96, 0.9])}}
    figures = lmc_report.plot(res, tmp_path)
    assert figures == ["dense.png", "imp.png"] and all((tmp_path / f).stat().st_size > 0 for f in figures)
    text = lmc_report.page(res, figures)
    assert "stable at every k measured, k = 0 included (largest barrier 0.20 points)" in text
    assert "unstable at k = 0 (30.00 points), stable from k = 500 on (10.0% of the 5000 iterations)" in text
    assert "- **reset**: unstable at 64.0%" in text and "- **rewind**: stable at every density" in text
    assert "- **random**: unstable at 80.0%, 64.0%" in text
    assert "| 2 | 64.0 | 3.00 | 97.00 | 1.00 | 97.90 | 20.00 | 90.00 |" in text


def test_conv_ab_loads_a_revisions_conv_and_swaps_it_in():
    """experiments/conv_ab.py's 'before' side: conv_same read from a git revision computes the same
    convolution, and use() makes Conv-2 and the ResNets compute with it until swapped back."""
    import jax
    import jax.numpy as jnp

    import conv_ab
    from ltjax.models import conv as C
    from ltjax.models import resnet as R

    old = conv_ab.old_conv_same("HEAD")
    x, k = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3)), jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
    np.testing.assert_allclose(old(x, k), C.conv_same(x, k), rtol=1e-5, atol=1e-5)
    now = C.conv_same
    try:
        conv_ab.use(old)
        assert C.CONV_IMPLS["xla"] is old and R.conv_same is old and old is not now
    finally:
        conv_ab.use(now)
    assert C.CONV_IMPLS["xla"] is now and R.conv_same is now

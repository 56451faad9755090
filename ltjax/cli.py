"""The ``ltjax`` command: ``run``, ``presets``, ``show``, ``runs``, ``compare``, ``plot``, ``instability``,
``supermask``, ``bench``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from ltjax.config import Config, ConfigError

# OSError: a --out, run or data path that can't be created or read (not a directory,
# permission denied, disk full, file name too long) is the user's to fix, not a bug.
_USER_ERRORS = (ConfigError, ValueError, OSError)


def _bench_steps(text: str) -> int:
    """argparse type of ``bench --steps``: a positive multiple of 100 (the evaluation interval
    bench measures with); a bad value is a usage error (exit 2) before anything is timed."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 100 <= n <= 2**31 - 1 or n % 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: must be a positive multiple of 100 "
                                         f"(bench evaluates every 100 iterations), at most {2**31 - 1}")
    return n


def _int_list(minimum: int, what: str):
    """An argparse type: integers >= ``minimum`` separated by commas; ``what`` names them in the
    error (e.g. "positive ticket counts like 1,2,4")."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(t) for t in text.split(",") if t.strip())
        except ValueError:
            values = ()
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: must be {what}")
        return values

    return parse


_ticket_counts = _int_list(1, "positive ticket counts like 1,2,4")  # bench --tickets
_rounds = _int_list(0, "round numbers like 0,3,6")  # --rounds
_iterations = _int_list(0, "iterations >= 0 like 0,100,500")  # instability --ks


def _seconds(text: str) -> float:
    """argparse type of ``bench --budget``: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: must be a positive number of seconds like 120")
    return v


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        return f"{e.strerror}: {e.filename}"  # not "[Errno 20] Not a directory: '...'"
    return str(e)


_ENVIRONMENT = """environment:
  LTJAX_CACHE_DIR         decoded datasets, read without TensorFlow (default ~/.cache/ltjax); a cached
                          dataset is used as is: delete its .npz to rebuild it from --manual-dir/--data-dir
  LTJAX_MANUAL_DIR        folder of original dataset files when --manual-dir is not given (offline machines)
  LTJAX_PROGRESS          0 off, 1 or bar a progress bar, lines plain progress lines (default: a bar on a
                          terminal, lines when stderr is a file or pipe)
  LTJAX_PROGRESS_SECONDS  seconds between plain progress lines (default 60)
  LTJAX_COMPILE_CACHE     1 (default) keeps compiled programs in $LTJAX_CACHE_DIR/jax, so a second run
                          starts faster; 0 turns it off (JAX_COMPILATION_CACHE_DIR, if set, is used as is)
"""


def _add_supermask(sub) -> None:
    sm = sub.add_parser("supermask", help="supermasks (Zhou et al. 2019): test accuracy of a preset's untrained "
                                          "network under each mask criterion's mask, and learned supermasks")
    sm.add_argument("preset", help="preset name or study file (path/to/study.py:NAME); its dense network is trained "
                                   "with its recipe for its iterations, all its seeds in one program")
    sm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override config fields, as `ltjax run --set`")
    sm.add_argument("--seeds", type=int, help="number of seeds (default: the preset's)")
    sm.add_argument("--criteria", default=None, metavar="NAME,...",
                    help="mask criteria (default all: large_final, small_final, large_init, small_init, "
                         "large_init_large_final, small_init_small_final, magnitude_increase, movement, "
                         "large_final_same_sign, random)")
    at = sm.add_mutually_exclusive_group()
    at.add_argument("--rounds", type=_rounds, default=None, metavar="R,R,...",
                    help="masks at the preset's per-layer pruning rates after R rounds (default 7: LeNet's "
                         "hidden layers at 0.8^7 = 21%%, output at 0.9^7 = 48%%)")
    at.add_argument("--densities", default=None, metavar="D,D,...",
                    help="instead: masks at these fractions of weights remaining (the preset's one-shot rates)")
    sm.add_argument("--learn", type=int, default=0, metavar="STEPS",
                    help="also learn a supermask on theta0 and on its signed constant for STEPS steps (Adam 0.1, "
                         "the preset's batch size)")
    sm.add_argument("--manual-dir", default=None)
    sm.add_argument("--data-dir", default=None)


def _add_instability(sub) -> None:
    st = sub.add_parser("instability", help="linear mode connectivity (Frankle et al. 2020): instability of each "
                                            "round of a reset or rewind run, or with --ks of a preset's dense "
                                            "network at iterations k")
    st.add_argument("run_dir", metavar="RUN_OR_PRESET",
                    help="a run directory; with --ks, a preset name or study file (path/to/study.py:NAME)")
    st.add_argument("--ks", type=_iterations, default=None, metavar="K,K,...",
                    help="dense mode: instability of the preset's network trained to each iteration k (its first "
                         "seed), copies trained to its iterations")
    st.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="with --ks: override config fields, as `ltjax run --set`")
    st.add_argument("--rounds", type=_rounds, default=None, metavar="R,R,...", help="rounds to analyze (default all)")
    st.add_argument("--points", type=int, default=31, help="values of alpha on each path (default 31)")
    st.add_argument("--bn-batches", type=int, default=30,
                    help="training batches for batch-norm statistics at each alpha (networks with batch norm)")
    st.add_argument("--train-examples", type=int, default=10_000, help="training examples the train error uses")
    st.add_argument("--seed", type=int, default=0, help="keys the copies' data orders")
    st.add_argument("--ticket-chunk", type=int, default=None, metavar="K", help="train the copies in chunks of K")
    st.add_argument("--manual-dir", default=None)
    st.add_argument("--data-dir", default=None)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="training throughput vs the machine's measured matmul peak")
    b.add_argument("--steps", type=_bench_steps, default=2000, help="timed iterations per measurement")
    b.add_argument("--conv", action="store_true",
                   help="also Conv-2 on CIFAR-shaped data, against the same network with flax.linen.Conv")
    b.add_argument("--full-round", action="store_true",
                   help="also time one full round of lenet_mnist_iclr2019 (needs MNIST)")
    b.add_argument("--suite", action="store_true",
                   help="instead: ticket-steps/s and memory vs vmapped tickets for LeNet-300-100, Conv-2 and ResNet-20 "
                        "on synthetic data (and a PyTorch loop where importable); writes bench.json and bench.md")
    b.add_argument("--tickets", type=_ticket_counts, default=(1, 2, 4, 8, 16, 32, 64), metavar="T,T,...",
                   help="with --suite: ticket counts (default 1,2,4,...,64)")
    b.add_argument("--models", default=None, metavar="NAME,...",
                   help="with --suite: lenet300_100, conv2, conv2_patches, resnet20 (default all)")
    b.add_argument("--out", default="bench", help="with --suite: folder for bench.json and bench.md")
    b.add_argument("--budget", type=_seconds, default=None, metavar="SECONDS",
                   help="with --suite: seconds per model after which larger T are not started (default: no bound)")
    b.add_argument("--no-torch", action="store_true", help="with --suite: do not time the PyTorch loop")
    b.add_argument("--breakdown", action="store_true",
                   help="also split one full round of lenet_mnist_openlth into data, compile, training, evaluation "
                        "and checkpoints (needs MNIST)")
    b.add_argument("--manual-dir", default=None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltjax", description="Lottery-ticket studies in JAX.", epilog=_ENVIRONMENT,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run or resume a lottery-ticket study from a preset", epilog=_ENVIRONMENT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("preset", help="preset name (see `ltjax presets`), or a study file's Config: "
                                  "path/to/study.py:NAME or package.module:NAME (your own model, optimizer, loss "
                                  "or arrays in it)")
    r.add_argument("--seeds", type=int, help="number of tickets (seeds) trained together")
    r.add_argument("--rounds", type=int, help="rounds to run (round 0 is the dense network)")
    r.add_argument("--iterations", type=int, help="training iterations per round")
    r.add_argument("--out", default="runs", help="parent of run directories (default ./runs)")
    r.add_argument("--manual-dir", default=None,
                   help="folder with the original dataset files, for offline machines (or $LTJAX_MANUAL_DIR)")
    r.add_argument("--data-dir", default=None, help="TFDS data_dir (default: TFDS's own)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field; repeatable (see `ltjax presets --fields`)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress report (default: a bar on a terminal; elsewhere, e.g. a log file, a plain "
                        "line every $LTJAX_PROGRESS_SECONDS=60 s; $LTJAX_PROGRESS=0|bar|lines overrides)")
    r.add_argument("--ticket-chunk", type=int, default=None, metavar="K",
                   help="train the tickets in sequential chunks of K inside the program (default: all at "
                        "once); bounds device memory, and K=1 speeds up conv nets on CPU")
    r.add_argument("--devices-per-ticket", type=_devices_per_ticket, default=1, metavar="K",
                   help="split each ticket's minibatch over K devices (a tickets x data mesh; default 1), or "
                        "'auto': the fewest whose share of the batch fits a device's memory")
    r.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the data on the host and feed it batch by batch, in the same order (default: only "
                        "for datasets read from disk, such as imagenet2012; --no-stream refuses those)")
    r.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="one study over several processes (hosts), one global mesh: process 0's address, the same "
                        "in every process; 'auto' finds the job in the environment (TPU pods, SLURM, "
                        "JAX_COORDINATOR_ADDRESS); see docs/scale.md")
    r.add_argument("--num-processes", type=int, default=None, metavar="N", help="with --coordinator: processes in all")
    r.add_argument("--process-id", type=int, default=None, metavar="I", help="with --coordinator: this one, 0 to N-1")
    r.add_argument("--repair", action="store_true",
                   help="recompute damaged (truncated or corrupted) checkpoints from the last good round")

    pr = sub.add_parser("presets", help="list presets")
    pr.add_argument("--fields", action="store_true", help="also list every config field with its help")

    s = sub.add_parser("show", help="per-round table of a run directory")
    s.add_argument("run_dir")

    ls = sub.add_parser("runs", help="list the runs under a folder: rounds done, accuracy, status")
    ls.add_argument("dir", nargs="?", default="runs", help="parent of run directories (default ./runs); a run's "
                                                           "status is complete, incomplete, running or damaged")

    c = sub.add_parser("compare", help="runs side by side: density and test accuracy by round")
    c.add_argument("runs", nargs="+", metavar="RUN", help="two or more run directories")
    c.add_argument("--plot", metavar="PATH", help="also write test accuracy vs density of all runs as a PNG")

    pl = sub.add_parser("plot", help="write a run's figures as PNGs (default RUN/figures)")
    pl.add_argument("run_dir")
    pl.add_argument("--out", metavar="DIR", help="folder for the figures (default RUN/figures): accuracy "
                                                     "and early-stop iteration vs density, per-layer density by round")

    _add_instability(sub)
    _add_supermask(sub)
    _add_bench(sub)
    return p


def _progress_mode(a):
    """--no-progress, else LTJAX_PROGRESS: 0 off, 1 or bar a bar, lines plain lines; unset: by where
    stderr goes (a bar on a terminal, plain lines to a file or pipe)."""
    if a.no_progress:
        return False
    env = os.environ.get("LTJAX_PROGRESS", "").strip().lower()
    modes = {"": True, "0": False, "1": "bar", "bar": "bar", "lines": "lines"}
    if env not in modes:
        raise ConfigError(f"LTJAX_PROGRESS={env!r} is not valid: use 0 (off), 1 or bar (a progress bar), "
                          f"lines (a plain line every LTJAX_PROGRESS_SECONDS), or leave it unset")
    return modes[env]


def _cmd_run(a) -> None:
    from ltjax import distributed

    if a.coordinator:  # before anything starts JAX
        distributed.initialize(None if a.coordinator == "auto" else a.coordinator, a.num_processes, a.process_id)
    elif a.num_processes is not None or a.process_id is not None:
        raise ConfigError("--num-processes and --process-id need --coordinator HOST:PORT (process 0's address), "
                          "or --coordinator auto")
    from ltjax import compile_cache, lottery, presets, report

    compile_cache.enable()

    config = presets.get(a.preset)
    flags = {"seeds": a.seeds, "rounds": a.rounds, "iterations": a.iterations}
    flag_sets = [f"{k}={v}" for k, v in flags.items() if v is not None]
    config = config.with_overrides(flag_sets + a.overrides)
    run = lottery.run(config, a.out, manual_dir=a.manual_dir, data_dir=a.data_dir, progress=_progress_mode(a),
                      repair=a.repair, ticket_chunk=a.ticket_chunk, devices_per_ticket=a.devices_per_ticket,
                      stream=a.stream)
    if distributed.is_primary():
        print(report.round_table(run))


def _cmd_presets(a) -> None:
    from ltjax import presets

    for name in sorted(presets.PRESETS):
        print(f"{name}\n    {presets.describe(name)}")
    if a.fields:
        from ltjax.config import ALIASES, SECTIONS

        helps, default = {f.name: f.metadata["help"] for f in fields(Config)}, Config()
        print("\nfields by section (--set section.key=value, or --set key=value with the field's own name):")
        for section, keys in SECTIONS.items():
            print(f"\n[{section}]")
            for key, f in keys.items():
                alias = f" (= {f})" if key != f else ""
                print(f"  {section}.{key}{alias}  default {getattr(default, f)!r}: {helps[f]}")
        print("\naliases: " + ", ".join(f"{k}=NAME sets {v}=(NAME,)" for k, v in ALIASES.items()))


def _cmd_show(a) -> None:
    from ltjax import report
    from ltjax.store import load_run

    print(report.round_table(load_run(a.run_dir)))


def _cmd_runs(a) -> None:
    from ltjax import report

    print(report.runs_table(a.dir))


def _cmd_compare(a) -> None:
    from ltjax import report
    from ltjax.store import load_run

    if len(a.runs) < 2:
        raise ValueError(f"compare takes two or more run directories, got {len(a.runs)} "
                         f"(`ltjax show {a.runs[0]}` prints one run's table)")
    runs = [load_run(r) for r in a.runs]
    print(report.compare_table(runs))
    if a.plot:
        from ltjax import plots

        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        plots.compare_accuracy(runs, a.plot)
        print(f"wrote {a.plot}")


def _cmd_plot(a) -> None:
    from ltjax import plots
    from ltjax.store import load_run

    for path in plots.standard_figures(load_run(a.run_dir), a.out):
        print(path)


def _cmd_instability(a) -> None:
    from ltjax import compile_cache, stability
    from ltjax.store import load_run

    compile_cache.enable()
    for name in ("points", "bn_batches", "train_examples"):
        if getattr(a, name) < (2 if name == "points" else 0):
            raise ValueError(f"--{name.replace('_', '-')}={getattr(a, name)} is not valid: must be >= "
                             f"{2 if name == 'points' else 0}")
    if a.ks is not None:
        _dense_instability(a)
        return
    if a.overrides:
        raise ValueError("--set applies to a preset with --ks; a run directory's settings are fixed")
    run = load_run(a.run_dir)
    rows, path = stability.run_table(run, a.rounds, points=a.points, bn_batches=a.bn_batches,
                                     train_examples=a.train_examples, seed=a.seed, ticket_chunk=a.ticket_chunk,
                                     manual_dir=a.manual_dir, data_dir=a.data_dir)
    print(f"{'round':>5} {'ticket':>6} {'% remaining':>11} {'test instab.':>12} {'train instab.':>13} "
          f"{'test err W1 / W2 (%)':>21}")
    for r in rows:
        ends = " / ".join(f"{100 * e:.2f}" for e in r["test_error_ends"])
        print(f"{r['round']:>5} {r['ticket']:>6} {100 * r['density']:>11.2f} {100 * r['test_instability']:>12.2f} "
              f"{100 * r['train_instability']:>13.2f} {ends:>21}")
    print(f"instability in percentage points of error (the error barrier); kept in {path}")


def _dense_instability(a) -> None:
    import jax

    from ltjax import presets, stability

    config = presets.get(a.run_dir).with_overrides(a.overrides)
    res = stability.of_config(config, a.ks, points=a.points, bn_batches=a.bn_batches, train_examples=a.train_examples,
                              copies_key=jax.random.PRNGKey(a.seed), ticket_chunk=a.ticket_chunk,
                              manual_dir=a.manual_dir, data_dir=a.data_dir)
    print(f"{'k':>7} {'test instab.':>12} {'train instab.':>13} {'test err W1 / W2 (%)':>21}")
    for k, r in zip(a.ks, res.summary()):
        ends = " / ".join(f"{100 * e:.2f}" for e in r["test_error_ends"])
        print(f"{k:>7} {100 * r['test_instability']:>12.2f} {100 * r['train_instability']:>13.2f} {ends:>21}")
    print(f"instability in percentage points of error (the error barrier), copies trained to iteration "
          f"{config.iterations}")


def _cmd_supermask(a) -> None:
    from ltjax import compile_cache, presets
    from ltjax import supermask as S

    criteria = S.check_criteria(c.strip() for c in a.criteria.split(",") if c.strip()) if a.criteria else S.NAMES
    densities = None
    if a.densities is not None:
        try:
            densities = tuple(float(t) for t in a.densities.split(",") if t.strip())
        except ValueError:
            raise ValueError(f"--densities={a.densities!r} is not valid: fractions remaining like 0.5,0.2,0.05") from None
    if a.learn < 0:
        raise ValueError(f"--learn={a.learn} is not valid: a number of steps >= 0")
    config = presets.get(a.preset).with_overrides(([f"seeds={a.seeds}"] if a.seeds is not None else []) + a.overrides)
    compile_cache.enable()
    rounds = a.rounds if a.rounds is not None or densities is not None else (7,)
    res = S.of_config(config, criteria, rounds=rounds if densities is None else None, densities=densities,
                      learn_steps=a.learn, manual_dir=a.manual_dir, data_dir=a.data_dir)
    print(f"dense network: test accuracy {100 * res.dense_test_acc.mean():.2f}% after {config.iterations} "
          f"iterations (mean over {config.seeds} seeds); untrained accuracies below are means over seeds")
    print(f"{'% remaining':>11} {'criterion':<24} {'theta0 * mask':>13} {'signed const * mask':>19}")
    for i, (dens, overall) in enumerate(zip(res.densities, res.overall)):
        layers = ", ".join(f"{n} {100 * d:.1f}%" for n, d in dens.items())
        print(f"{100 * overall:>11.2f} per layer: {layers}")
        for c in criteria:
            print(f"{100 * overall:>11.2f} {c:<24} {100 * res.theta0[c][i].mean():>13.2f} "
                  f"{100 * res.signed[c][i].mean():>19.2f}")
    for w, curves in (res.learned or {}).items():
        print(f"learned supermask on {w}, {a.learn} steps: test accuracy {100 * curves.test_acc_sampled[:, -1].mean():.2f}% "
              f"(a sampled mask), {100 * curves.test_acc_threshold[:, -1].mean():.2f}% (s > 0, "
              f"{100 * curves.density[:, -1].mean():.2f}% of weights)")


def _cmd_bench(a) -> None:
    from ltjax import bench

    if a.suite:
        from ltjax import bench_suite

        names = tuple(n.strip() for n in a.models.split(",")) if a.models else tuple(bench_suite.MODELS)
        bench_suite.suite(tickets=a.tickets, names=names, out=a.out, budget_s=a.budget, torch=not a.no_torch)
        print(f"wrote {a.out}/bench.json and {a.out}/bench.md")
        return

    bench.main(steps=a.steps, full_round=a.full_round, manual_dir=a.manual_dir, conv=a.conv, breakdown=a.breakdown)


def _devices_per_ticket(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of devices or 'auto'") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"run": _cmd_run, "presets": _cmd_presets, "show": _cmd_show, "runs": _cmd_runs, "compare": _cmd_compare,
         "plot": _cmd_plot, "instability": _cmd_instability, "supermask": _cmd_supermask,
         "bench": _cmd_bench}[args.command](args)
    except _USER_ERRORS as e:
        print(f"ltjax: error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # data that can't be found, a run in use or damaged; a preemption
        from ltjax.data import DataUnavailableError
        from ltjax.midround import Preempted
        from ltjax.store import CorruptRunError, RunLockedError

        if isinstance(e, Preempted):
            print(f"ltjax: {e}", file=sys.stderr)
            return 128 + 15  # as if SIGTERM had ended it, after saving
        if isinstance(e, (DataUnavailableError, CorruptRunError, RunLockedError)):
            print(f"ltjax: error: {e}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("ltjax: interrupted; rerun the same command to resume after the last complete round (or mid-round "
              "checkpoint, with --set training.checkpoint_every=N)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The configuration of a lottery-ticket study: one frozen dataclass, validated, hashable.

Every field is a command-line override (``--set field=value``). A run directory is named
by a hash of all fields except the ones in ``NOT_HASHED`` (how far to go, not what to do),
so rerunning with more rounds resumes the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields

from ltjax import pruning, scores
from ltjax.data import DATASETS
from ltjax.models import MODELS
from ltjax.models.initializers import INITIALIZERS
from ltjax.train import OPTIMIZERS, TrainSpec

STRATEGIES = ("reset", "rewind", "continue")
MODES = ("iterative", "oneshot")
NOT_HASHED = ("name", "rounds")


class ConfigError(ValueError):
    """A configuration value is of the wrong type, out of range or unknown."""


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    name: str = _f("custom", "preset this configuration started from (names the run directory)")
    # data
    dataset: str = _f("mnist", "dataset name")
    validation_size: int = _f(5000, "examples carved out of train for validation (0: none, early stop uses test)")
    split_seed: int = _f(0, "seed of the validation split")
    # model
    model: str = _f("mlp", "model name")
    widths: tuple[int, ...] = _f((300, 100), "hidden layer widths of the MLP")
    init: str = _f("trunc_normal", "kernel initializer")
    init_std: float = _f(0.1, "std of trunc_normal (cut at 2 std)")
    # training
    optimizer: str = _f("sgd", "sgd | momentum | adam")
    lr: float = _f(0.05, "learning rate")
    momentum: float = _f(0.9, "momentum of the 'momentum' optimizer")
    weight_decay: float = _f(0.0, "L2 weight decay added to the gradient")
    lr_drops: tuple[int, ...] = _f((), "iterations at which the learning rate is multiplied by lr_drop_factor")
    lr_drop_factor: float = _f(0.1, "learning-rate drop factor")
    warmup_iterations: int = _f(0, "linear learning-rate warmup iterations")
    batch_size: int = _f(100, "minibatch size")
    iterations: int = _f(50_000, "training iterations per round (minibatch steps)")
    eval_every: int = _f(100, "evaluate validation and test every this many iterations")
    # lottery procedure
    strategy: str = _f("reset", "reset (to theta0) | rewind (to theta_k) | continue (keep trained weights, Han et al.)")
    rewind_iteration: int = _f(0, "k of theta_k for strategy=rewind (an iteration, not an epoch)")
    mode: str = _f("iterative", "iterative | oneshot (every round pruned from the dense round-0 network)")
    densities: tuple[float, ...] = _f((), "oneshot: target densities (fraction remaining) of rounds 1..; default: (1-prune_rate)^r")
    scope: str = _f("layerwise", "layerwise | global")
    score: str = _f("magnitude", "score used to prune")
    prune_rate: float = _f(0.2, "fraction of surviving weights pruned per round (sparsity step, not density)")
    layer_rates: tuple[tuple[str, float], ...] = _f((("out", 0.1),), "layerwise rate overrides, layer:rate,... (globs allowed)")
    exclude: tuple[str, ...] = _f((), "layers never pruned (globs allowed)")
    rounds: int = _f(22, "rounds to run; round 0 trains the dense network")
    seeds: int = _f(1, "number of tickets (seeds seed, seed+1, ...) trained together in one program")
    seed: int = _f(0, "first seed")

    # -- derived ---------------------------------------------------------------------------
    def train_spec(self) -> TrainSpec:
        return TrainSpec(
            optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, lr_drops=self.lr_drops,
            lr_drop_factor=self.lr_drop_factor, warmup_iterations=self.warmup_iterations,
            batch_size=self.batch_size, eval_every=self.eval_every,
        )

    def rewind_step(self) -> int:
        """Iteration the tickets of rounds ≥ 1 start from (0 for reset)."""
        return self.rewind_iteration if self.strategy == "rewind" else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {', '.join(sorted(known))}")
        return cls(**{k: _coerce(k, v) for k, v in d.items()}).validate()

    def with_overrides(self, assignments: list[str]) -> "Config":
        """Apply ``key=value`` strings (the CLI's ``--set``) and validate."""
        updates = {}
        for a in assignments:
            key, sep, value = a.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"--set expects key=value, got {a!r}")
            updates[key] = parse_value(key, value)
        return dataclasses.replace(self, **updates).validate()

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> "Config":
        def choice(name, allowed):
            v = getattr(self, name)
            if v not in allowed:
                raise ConfigError(f"{name}={v!r} is not valid; choose one of: {', '.join(sorted(allowed))}")

        def check(name, ok, what):
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not valid: must be {what}")

        choice("dataset", [*DATASETS, "xor"])
        choice("model", MODELS)
        choice("init", INITIALIZERS)
        choice("optimizer", OPTIMIZERS)
        choice("strategy", STRATEGIES)
        choice("mode", MODES)
        choice("scope", pruning.SCOPES)
        choice("score", scores.SCORES)
        check("validation_size", self.validation_size >= 0, "an integer ≥ 0")
        check("widths", len(self.widths) > 0 and all(w > 0 for w in self.widths), "positive integers, e.g. 300,100")
        check("init_std", self.init_std > 0, "> 0")
        check("lr", self.lr > 0, "> 0")
        check("momentum", 0 <= self.momentum < 1, "in [0, 1)")
        check("weight_decay", self.weight_decay >= 0, "≥ 0")
        check("lr_drop_factor", self.lr_drop_factor > 0, "> 0")
        check("lr_drops", all(0 < t < self.iterations for t in self.lr_drops), f"iterations in (0, iterations={self.iterations})")
        check("warmup_iterations", 0 <= self.warmup_iterations <= self.iterations, f"in [0, iterations={self.iterations}]")
        check("batch_size", self.batch_size > 0, "a positive integer")
        check("eval_every", self.eval_every > 0, "a positive integer")
        check("iterations", self.iterations > 0 and self.iterations % self.eval_every == 0,
              f"a positive multiple of eval_every={self.eval_every}")
        check("rewind_iteration", 0 <= self.rewind_iteration < self.iterations and self.rewind_iteration % self.eval_every == 0,
              f"a multiple of eval_every={self.eval_every} in [0, iterations={self.iterations})")
        check("prune_rate", 0 < self.prune_rate < 1, "a fraction in (0, 1) of the surviving weights")
        check("layer_rates", all(0 <= r <= 1 for _, r in self.layer_rates), "layer:rate pairs with rates in [0, 1]")
        check("densities", all(0 < d <= 1 for d in self.densities), "fractions remaining in (0, 1]")
        check("densities", not self.densities or self.mode == "oneshot", "empty unless mode=oneshot")
        check("rounds", self.rounds >= 1, "≥ 1 (round 0 is the dense network)")
        check("rounds", not self.densities or self.rounds <= len(self.densities) + 1,
              f"≤ len(densities)+1 = {len(self.densities) + 1}")
        check("seeds", self.seeds >= 1, "≥ 1")
        check("seed", self.seed >= 0, "≥ 0")
        return self


def _field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(Config)


def parse_value(key: str, text: str):
    """Parse a ``--set`` value by the field's type: ``300,100`` → (300, 100), ``out:0.1`` → (("out", 0.1),)."""
    types = _field_types()
    if key not in types:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(types))}")
    return _coerce(key, text.strip())


def _scalar(key: str, tp, v):
    try:
        if tp is bool:
            if isinstance(v, str):
                if v.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(v)
                return v.lower() in ("true", "1")
            return bool(v)
        if tp is int:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(v)
            if isinstance(v, str):
                try:
                    return int(v)
                except ValueError:  # accept 5e4, 2.0
                    x = float(v)
                    if not x.is_integer():
                        raise
                    return int(x)
            return int(v)
        if tp is float:
            x = float(v)
            if x != x or x in (float("inf"), float("-inf")):
                raise ValueError(v)
            return x
        return str(v)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}={v!r} is not a valid {tp.__name__}") from None


def _coerce(key: str, v):
    """Turn a JSON value or CLI string into the field's Python type, or raise ConfigError."""
    tp = _field_types()[key]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(v, str):
            v = [p for p in v.split(",") if p.strip()] if v.strip() else []
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{key}={v!r} must be a comma-separated list")
        if typing.get_origin(inner) is tuple:  # layer_rates: ("layer", rate) pairs
            pairs = []
            for item in v:
                if isinstance(item, str):
                    name, sep, rate = item.partition(":")
                    if not sep or not name.strip():
                        raise ConfigError(f"{key} expects layer:rate pairs like out:0.1, got {item!r}")
                    item = (name.strip(), rate)
                if len(item) != 2:
                    raise ConfigError(f"{key} expects layer:rate pairs, got {item!r}")
                pairs.append((str(item[0]), _scalar(key, float, item[1])))
            return tuple(pairs)
        return tuple(_scalar(key, inner, x.strip() if isinstance(x, str) else x) for x in v)
    if isinstance(v, (list, tuple, dict)):
        raise ConfigError(f"{key}={v!r} must be a single {tp.__name__}")
    return _scalar(key, tp, v)

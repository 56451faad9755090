"""The configuration of a lottery-ticket study: one frozen dataclass, validated, hashable.

Every field is a command-line override (``--set field=value``). A run directory is named
by a hash of all fields except the ones in ``NOT_HASHED`` (how far to go, not what to do),
so rerunning with more rounds resumes the same run.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import math
import numbers
import typing
from dataclasses import dataclass, field, fields

from ltjax import at_init  # noqa: F401  registers the synflow and grasp scores and controls (above rounds)
from ltjax import identity, pruning, rounds, scores, stopping
from ltjax.data import data_arrays, names as data_names
from ltjax.data.augment import AUGMENTATIONS
from ltjax.models import MODELS
from ltjax.models.initializers import INITIALIZERS
from ltjax.train import OPTIMIZERS, TrainSpec

STRATEGIES = rounds.RESTARTS  # restart strategies by name (ltjax.rounds.register_restart adds more)
MODES = rounds.MASK_POLICIES  # mask policies by name (ltjax.rounds.register_mask_policy adds more)
NOT_HASHED = ("name", "rounds")
# Fields added after runs existed: left out of the hash while at their default, so adding
# them did not rename existing run directories.
HASHED_IF_SET = {"controls": (), "shuffle_layers": ("*",), "early_stop": "min_loss", "patience": 4,
                 "patience_every": 500, "flip_round": 0, "scores": (), "augment": "none",
                 "partial_reinit_from": "", "partial_reinit_round": 0, "loss": "cross_entropy", "schedule": "step",
                 "sweep": "", "sweep_values": (), "model_args": (), "checkpoint_every": 0}
SWEEPS = ("lr", "weight_decay", "init_std")  # what sweep may vary per ticket (traced, one program)
LOSSES = ("cross_entropy",)
SCHEDULES = ("step", "cosine")
# Fields that may hold your own object instead of a name (see ltjax.identity): field -> kind
OBJECT_FIELDS = {"dataset": "data", "model": "model", "optimizer": "optimizer", "loss": "loss", "schedule": "schedule"}

# Bounds that are not arbitrary: the compiled training program counts iterations (and
# indexes batches and layers) with 32-bit integers; JAX's PRNG keys hold 32-bit seeds (a
# larger seed would silently collide with a smaller one); round directories are numbered
# with three digits (round_000 … round_999); and a run directory ``{name}-{12-char hash}``
# must fit the 255-byte file-name limit of common file systems.
INT32_MAX = 2**31 - 1
SEED_LIMIT = 2**32
MAX_ROUNDS = 1000
MAX_NAME_BYTES = 255 - 13


class ConfigError(ValueError):
    """A configuration value is of the wrong type, out of range or unknown."""


ModelArg = typing.Union[bool, int, float, str]  # a value of model_args: a module attribute's scalar


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    name: str = _f("custom", "preset this configuration started from (names the run directory)")
    # data
    dataset: str = _f("mnist", "dataset name (in Python also your own arrays: a dict with x_train, y_train, "
                               "x_test, y_test, a tuple of those four, or an ltjax.data.Dataset)")
    validation_size: int = _f(5000, "examples carved out of train for validation (0: none, early stop uses test)")
    split_seed: int = _f(0, "seed of the validation split")
    # model
    model: str = _f("mlp", "model name (in Python also your own Flax module or ltjax.models.Model)")
    widths: tuple[int, ...] = _f((300, 100), "hidden layer widths of the MLP")
    model_args: tuple[tuple[str, ModelArg], ...] = _f(
        (), "attributes of the named model's Flax module, name:value,... (e.g. conv_impl:patches for conv2, "
            "depth:8,width:4 for resnet20): numbers, true/false or text, each of the attribute's own type")
    init: str = _f("trunc_normal", "kernel initializer")
    init_std: float = _f(0.1, "std of trunc_normal (cut at 2 std)")
    # training
    optimizer: str = _f("sgd", "sgd | momentum | adam (in Python also your own optax optimizer as a factory "
                               "lr_schedule -> GradientTransformation, given the learning-rate schedule of lr, "
                               "lr_drops and warmup_iterations offset to the ticket's first iteration)")
    lr: float = _f(0.05, "learning rate")
    momentum: float = _f(0.9, "momentum of the 'momentum' optimizer")
    weight_decay: float = _f(0.0, "L2 weight decay added to the gradient")
    schedule: str = _f("step", "learning-rate schedule: step (lr, times lr_drop_factor at each of lr_drops) | cosine "
                               "(cosine decay from lr to 0 at iterations); both after warmup_iterations of linear "
                               "warmup; in Python also your own iteration -> learning rate")
    lr_drops: tuple[int, ...] = _f((), "iterations at which the learning rate is multiplied by lr_drop_factor")
    lr_drop_factor: float = _f(0.1, "learning-rate drop factor")
    warmup_iterations: int = _f(0, "linear learning-rate warmup iterations")
    batch_size: int = _f(100, "minibatch size")
    iterations: int = _f(50_000, "training iterations per round (minibatch steps)")
    eval_every: int = _f(100, "evaluate validation and test every this many iterations")
    checkpoint_every: int = _f(0, "save the training state every this many iterations inside a round (a multiple "
                                  "of eval_every), so a killed or preempted run resumes mid-round; 0: once a round")
    loss: str = _f("cross_entropy", "cross_entropy (softmax; sigmoid BCE for one output), or in Python your own "
                                     "loss (logits, labels) -> per-example loss")
    augment: str = _f("none", "training augmentation on the device: none | cifar (4-pixel pad + random crop, "
                              "random horizontal flip) | imagenet (random resized crop, random horizontal flip), "
                              "drawn per ticket and iteration")
    # lottery procedure
    early_stop: str = _f("min_loss", "early-stop rule replayed on the curves: min_loss (minimum validation loss, "
                                     "Frankle & Carbin 2019) | patience (best validation accuracy, stop after "
                                     "`patience` evaluations every `patience_every` iterations without improvement, "
                                     "the LTH-vs-SNIP report)")
    patience: int = _f(4, "early_stop=patience: evaluations without improvement before stopping")
    patience_every: int = _f(500, "early_stop=patience: iterations between the evaluations it considers")
    strategy: str = _f("reset", "reset (to theta0) | rewind (to theta_k) | continue (keep trained weights, Han et al.) "
                       "| lr_rewind (keep trained weights, rewind the lr schedule to k) | finetune (keep trained "
                       "weights, final lr), Renda et al. 2020")
    rewind_iteration: int = _f(0, "k of theta_k for strategy=rewind; lr_rewind and finetune also retrain from "
                               "iteration k (an iteration, not an epoch)")
    mode: str = _f("iterative", "iterative | oneshot (every round pruned from the dense round-0 network) | at_init "
                                "(every round θ0 pruned by the score before training) | random_at_init (a uniformly "
                                "random mask at θ0 with one-shot pruning's per-layer counts)")
    densities: tuple[float, ...] = _f((), "oneshot: target densities (fraction remaining) of rounds 1..; default: (1-prune_rate)^r")
    scope: str = _f("layerwise", "layerwise | global")
    scores: tuple[str, ...] = _f(("magnitude",), "the score(s) pruning ranks by; several in one program: one "
                                                 "ticket per (score, seed), all seeds of a score sharing its θ0 "
                                                 "with the other scores (`score=NAME` is short for scores=NAME)")
    prune_rate: float = _f(0.2, "fraction of surviving weights pruned per round (sparsity step, not density)")
    layer_rates: tuple[tuple[str, float], ...] = _f((("out", 0.1),), "layerwise rate overrides, layer:rate,... (globs allowed)")
    exclude: tuple[str, ...] = _f((), "layers never pruned (globs allowed)")
    rounds: int = _f(22, "rounds to run; round 0 trains the dense network")
    seeds: int = _f(1, "number of tickets (seeds seed, seed+1, ...) trained together in one program")
    seed: int = _f(0, "first seed")
    sweep: str = _f("", "a hyperparameter that varies across the tickets of one compiled program: lr | "
                        "weight_decay | init_std (\"\": none); each of sweep_values gets seeds x scores tickets, "
                        "sharing θ0's draws and the data order with the other values")
    sweep_values: tuple[float, ...] = _f((), "the values of sweep, one set of tickets each, e.g. 0.1,0.05,0.01")
    # controls trained beside the tickets (rounds >= 1)
    controls: tuple[str, ...] = _f((), "networks trained beside each ticket, e.g. reinit:3,shuffle:3 "
                                       "(reinit | shuffle | random | reset | snip | isnip)")
    shuffle_layers: tuple[str, ...] = _f(("*",), "layers the shuffle control rearranges (globs)")
    partial_reinit_from: str = _f("", "partial reinitialization test: a run directory of the same seeds and scores; "
                                      "θ0 keeps that run's θ0 on the weights all tickets of a seed kept in round "
                                      "partial_reinit_round and redraws the rest from the initializer")
    partial_reinit_round: int = _f(0, "round of partial_reinit_from whose common survivors keep their θ0 (≥ 1)")
    flip_round: int = _f(0, "LTH_flip: round whose mask is the complement of the previous round's mask "
                            "instead of a pruning step (0: never; >= 2)")
    score: dataclasses.InitVar[str | None] = None  # alias: score=NAME sets scores=(NAME,)

    # -- derived ---------------------------------------------------------------------------
    def train_spec(self) -> TrainSpec:
        for f in ("optimizer", "loss", "schedule"):
            if isinstance(getattr(self, f), identity.ObjectRef):
                raise ConfigError(f"{f}={getattr(self, f)!r} is the record of your own {f} from a saved run; pass "
                                  f"the object itself (config.replace({f}=...)) to train with it")
        return TrainSpec(
            optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, lr_drops=self.lr_drops,
            lr_drop_factor=self.lr_drop_factor, warmup_iterations=self.warmup_iterations,
            batch_size=self.batch_size, eval_every=self.eval_every, augment=self.augment,
            loss=None if self.loss == "cross_entropy" else self.loss, schedule=self._schedule(),
        )

    def _schedule(self):
        """The learning rate at a global iteration, or None for the step schedule (built by train)."""
        if self.schedule == "step":
            return None
        if self.schedule != "cosine":
            return self.schedule
        return _cosine(self.lr, self.warmup_iterations, self.iterations)

    def objects(self) -> dict[str, object]:
        """The fields holding your own objects instead of names: ``{field: object}``."""
        return {f: getattr(self, f) for f in OBJECT_FIELDS if not isinstance(getattr(self, f), str)}

    def require_objects(self) -> "Config":
        """Raise unless every object field holds a name or the object itself: a configuration read
        back from a run directory holds only records (:class:`~ltjax.identity.ObjectRef`) of
        your own objects, enough to show and compare the run but not to train it."""
        refs = [f for f, v in self.objects().items() if isinstance(v, identity.ObjectRef)]
        if refs:
            raise ConfigError(f"{', '.join(f'{f}={getattr(self, f)!r}' for f in refs)}: the record of your own "
                              f"{', '.join(OBJECT_FIELDS[f] for f in refs)} from a saved run; pass the object itself "
                              f"(config.replace({refs[0]}=...)) to train with it")
        return self

    def ticket_scores(self) -> list[str]:
        """The score each ticket is pruned by, in ticket order: ``scores[s]`` for tickets
        ``s·seeds … s·seeds + seeds - 1`` (seed ``seed + i`` is ticket ``s·seeds + i``), the
        block of ``len(scores)·seeds`` tickets repeated for each ``sweep_values`` entry."""
        return [s for _ in range(self.variants()) for s in self.scores for _ in range(self.seeds)]

    def ticket_sweep(self) -> list[float] | None:
        """Each ticket's value of ``sweep`` in ticket order (``sweep_values[v]`` for the v-th
        block of ``len(scores)·seeds`` tickets), or ``None`` without a sweep."""
        if not self.sweep:
            return None
        return [v for v in self.sweep_values for _ in range(len(self.scores) * self.seeds)]

    def variants(self) -> int:
        """Sets of ``seeds × scores`` tickets: one per ``sweep_values`` entry (1 without a sweep)."""
        return max(1, len(self.sweep_values))

    def num_tickets(self) -> int:
        """Tickets trained together: ``seeds`` × the number of scores × the number of sweep values."""
        return self.seeds * len(self.scores) * self.variants()

    def rewind_step(self) -> int:
        """Iteration the tickets of rounds ≥ 1 start from (0 for reset)."""
        return rounds.RESTARTS[self.strategy].step(self.rewind_iteration) if self.strategy in rounds.RESTARTS else 0

    def to_dict(self) -> dict:
        """Every field as JSON-ready values; your own objects as their :func:`ltjax.identity.describe`."""
        return {f.name: (identity.describe(OBJECT_FIELDS[f.name], getattr(self, f.name))
                         if f.name in OBJECT_FIELDS and not isinstance(getattr(self, f.name), str)
                         else getattr(self, f.name)) for f in fields(self)}

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and _canonical(self) == _canonical(other)

    def __hash__(self) -> int:
        return hash(_canonical(self))

    def hash(self) -> str:
        d = _legacy_scores(self.to_dict())
        d = {k: v for k, v in d.items()
             if k not in NOT_HASHED and not (k in HASHED_IF_SET and _same(v, HASHED_IF_SET[k]))}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **kw) -> "Config":
        """A copy with the given fields changed, validated (a bad value raises ConfigError here,
        not later at ``run``). Change fields that depend on each other (``iterations`` and
        ``rewind_iteration``, say) in one call."""
        return dataclasses.replace(self, **{k if k in ALIASES else field_of(k): v for k, v in kw.items()}).validate()

    def __post_init__(self, score=None):
        if score is not None:  # the alias: one score
            object.__setattr__(self, "scores", (score,))
        # Normalize equivalent Python values (an int or numpy scalar for a float field, a list
        # for a tuple) so that equal configurations hash equally and survive config.json.
        for f in fields(self):
            object.__setattr__(self, f.name, _normalize(_field_types()[f.name], getattr(self, f.name)))

    def section(self, name: str) -> dict:
        """One section of the configuration, ``{key: value}`` as :meth:`nested` shows it."""
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {_show(name)}{did_you_mean(name, SECTIONS)}; "
                              f"sections: {', '.join(SECTIONS)}")
        return self.nested()[name]

    def nested(self) -> dict:
        """The configuration by section: ``{"data": {"name": "mnist", ...}, "model": {...}, "training":
        {...}, "pruning": {...}, "controls": {...}, "study": {...}}``; :meth:`from_dict` reads it back."""
        flat = self.to_dict()
        return {name: {key: flat[f] for key, f in keys.items()} for name, keys in SECTIONS.items()}

    @classmethod
    def from_dict(cls, d: dict, *, recorded: bool = False) -> "Config":
        """A validated Config from a mapping such as a parsed config.json; wrong types raise ConfigError.

        ``recorded=True`` reads what a run directory recorded, checked when the run was made: only
        the types are checked, so reading a run needs no registry entry (a model, score, restart,
        mask policy or control you registered where it was trained) and no code of yours;
        training it (:func:`ltjax.lottery.run`) checks everything again."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a mapping of field names to values, got {_show(d)}")
        d = _flatten_sections(d)
        if "score" in d:  # a config.json from before score and scores were one field: scores overrode score
            score = d.pop("score")
            d.setdefault("scores", ())
            d["scores"] = d["scores"] or ((score,) if isinstance(score, str) else score)
        known = {f.name for f in fields(cls)}
        unknown = sorted(_show(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"unknown config keys [{', '.join(unknown)}]; valid keys: {', '.join(sorted(known))} "
                              f"(or section.key: {', '.join(SECTIONS)})")
        config = cls(**{k: (identity.ObjectRef(OBJECT_FIELDS[k], v) if k in OBJECT_FIELDS and isinstance(v, dict)
                            else _coerce(k, v)) for k, v in d.items()})
        return config._validate_types() if recorded else config.validate()

    def with_overrides(self, assignments: list[str]) -> "Config":
        """Apply ``key=value`` strings (the CLI's ``--set``) and validate."""
        updates = {}
        for a in assignments:
            key, sep, value = a.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"--set expects key=value (see `ltjax presets --fields` for the keys), "
                                  f"got {_show(a)}")
            updates[field_of(key)] = parse_value(key, value)
        return dataclasses.replace(self, **updates).validate()

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> "Config":
        """Check every field's type and range; raise ConfigError naming the field, its value and what is allowed."""
        self._validate_types()
        self._validate_choices()
        self._validate_training()
        self._validate_pruning()
        return self

    def _validate_types(self) -> "Config":
        """Each field's type (your own objects: the kind of object), not yet its range or registry."""
        types = _field_types()
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in OBJECT_FIELDS and not isinstance(v, str):
                _check_object(self, f.name, v)
            elif not _type_ok(types[f.name], v):
                raise ConfigError(f"{f.name}={_show(v)} is not valid: must be {_describe(types[f.name])}")
        return self

    def _choice(self, name, allowed) -> None:
        v = getattr(self, name)
        if name in OBJECT_FIELDS and not isinstance(v, str):
            return
        if v not in allowed:
            raise ConfigError(f"{name}={_show(v)} is not valid; choose one of: {', '.join(sorted(allowed))}")

    def _check(self, name, ok, what) -> None:
        if not ok:
            raise ConfigError(f"{name}={_show(getattr(self, name))} is not valid: must be {what}")

    def _validate_choices(self) -> None:
        """Names that must be one of a registry's (or your own object), and the settings that
        depend on which was chosen."""
        self._choice("dataset", data_names())
        self._choice("model", MODELS)
        self._choice("init", INITIALIZERS)
        self._validate_model_args()
        self._choice("optimizer", OPTIMIZERS)
        self._choice("loss", LOSSES)
        self._choice("schedule", SCHEDULES)
        self._check("lr_drops", not self.lr_drops or self.schedule == "step",
              "empty unless schedule=step (the drops are the step schedule's)")
        self._check("warmup_iterations", not self.warmup_iterations or isinstance(self.schedule, str),
              "0 with your own schedule (put any warmup in it)")
        self._choice("strategy", STRATEGIES)
        self._choice("mode", MODES)
        self._choice("scope", pruning.SCOPES)
        self._check("scores", len(self.scores) >= 1, "at least one score name, e.g. magnitude")
        for name in self.scores:
            if name not in scores.SCORES:
                raise ConfigError(f"scores={_show(self.scores)} is not valid: {name!r} is not a score; choose from: "
                                  f"{', '.join(sorted(scores.SCORES))}")
        self._check("scores", len(set(self.scores)) == len(self.scores), "distinct score names")
        self._choice("early_stop", stopping.EARLY_STOP_RULES)
        self._choice("augment", AUGMENTATIONS)
        self._check("patience", self.patience >= 1, "an integer ≥ 1 (evaluations)")
        self._check("patience_every", self.patience_every >= 1 and (self.early_stop != "patience" or self.eval_every < 1
                                                               or self.patience_every % self.eval_every == 0),
              f"a positive multiple of eval_every={self.eval_every} (iterations) with early_stop=patience")
        self._check("partial_reinit_round", (self.partial_reinit_round >= 1) == bool(self.partial_reinit_from),
              "≥ 1 exactly when partial_reinit_from names a run (and 0 otherwise)")
        self._check("flip_round", self.flip_round == 0 or 2 <= self.flip_round < MAX_ROUNDS,
              "0 (no flip) or a round ≥ 2 (the complement of round r-1's mask; round 0's is dense)")
        self._check("flip_round", self.flip_round == 0 or self.mode == "iterative",
              "0 unless mode=iterative (the flipped mask is pruned further round by round)")
        self._validate_sweep()

    def _validate_model_args(self) -> None:
        """``model_args``: distinct attributes of the named model's module, each given a value of its
        own type, that the module can be built and initialized with."""
        if not self.model_args:
            return
        names = [k for k, _ in self.model_args]
        self._check("model_args", isinstance(self.model, str),
                    "empty with your own module or Model (set its attributes when you construct it)")
        self._check("model_args", len(set(names)) == len(names), "distinct attribute names (each given once)")
        module = model_module(self)
        settable = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
                    if f.name not in ("parent", "name", "num_outputs")
                    and isinstance(getattr(module, f.name), (bool, int, float, str))}
        for k, v in self.model_args:
            if k in ("widths", "num_outputs"):
                raise ConfigError(f"model_args={_show(self.model_args)} is not valid: {k} is set "
                                  f"{'by the widths field' if k == 'widths' else 'by the data (its classes)'}")
            if k not in settable:
                raise ConfigError(f"model_args={_show(self.model_args)} is not valid: {type(module).__name__} (model "
                                  f"{self.model!r}) has no attribute {k!r} that a config can set"
                                  f"{did_you_mean(k, settable)}; settable: {', '.join(sorted(settable)) or 'none'}")
            want = type(settable[k])
            ok = isinstance(v, want) and (want is not int or not isinstance(v, bool)) or (
                want is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise ConfigError(f"model_args={_show(self.model_args)} is not valid: {k} of {type(module).__name__} "
                                  f"is {_WHAT[want]} (its default is {settable[k]!r}), not {_show(v)}")
        try:
            import jax

            built = module.clone(**dict(self.model_args))
            jax.eval_shape(lambda: built.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, *_input_shape(self))),
                                              **({"train": False} if _takes_train(built) else {})))
        except Exception as e:  # noqa: BLE001 - the module's own complaint, named with the field that caused it
            raise ConfigError(f"model_args={_show(self.model_args)} is not valid for model {self.model!r}: "
                              f"{type(e).__name__}: {e}") from None

    def _validate_sweep(self) -> None:
        """A sweep's name, values and what it needs of the rest."""
        if self.sweep == "":
            self._check("sweep_values", not self.sweep_values, "empty unless sweep names what they are values of")
            return
        self._choice("sweep", SWEEPS)
        self._check("sweep_values", len(self.sweep_values) >= 2 and len(set(self.sweep_values)) == len(self.sweep_values),
                    f"at least two distinct values of sweep={self.sweep!r}")
        zero_ok = self.sweep == "weight_decay"
        self._check("sweep_values", all(v >= 0 if zero_ok else v > 0 for v in self.sweep_values),
                    "≥ 0 each" if zero_ok else "> 0 each")
        if self.sweep == "lr":
            self._check("sweep", isinstance(self.schedule, str) and self.schedule == "step",
                        "lr only with schedule=step (the swept lr is the peak of the step schedule; cosine and "
                        "your own schedule are built from one lr)")
        if self.sweep == "weight_decay":
            self._check("sweep", isinstance(self.optimizer, str),
                        "weight_decay only with a named optimizer (it is their L2 term; put yours in your optimizer)")
        if self.sweep == "init_std":
            self._check("sweep", self.init == "trunc_normal" and self.init_std == 1.0 and isinstance(self.model, str),
                        "init_std with a named model built with init=trunc_normal and init_std=1 (each ticket's "
                        "unit draws are scaled by its std)")
            self._check("sweep", not self.partial_reinit_from, "not init_std beside partial_reinit_from")

    def _validate_training(self) -> None:
        """The run's name, data, model and training ranges."""
        name = self.name
        self._check("name", name.strip() != "" and name not in (".", "..") and "/" not in name and "\\" not in name
              and name.isprintable(),
              "a non-empty name of printable characters without '/' or '\\' (it names the run directory)")
        self._check("name", len(name.encode()) <= MAX_NAME_BYTES,
              f"at most {MAX_NAME_BYTES} bytes long (it names the run directory)")
        self._check("validation_size", self.validation_size >= 0, "an integer ≥ 0")
        self._check("split_seed", self.split_seed >= 0, "an integer ≥ 0")
        self._check("widths", all(0 < w <= INT32_MAX for w in self.widths),
              f"positive integers (each ≤ {INT32_MAX}), e.g. 300,100")
        self._check("widths", len(self.widths) > 0 or not _uses_widths(self.model),
              f"at least one width for model={self.model!r} (its hidden layer widths, e.g. 300,100; only "
              f"fixed architectures, whose factory's widths default to (), ignore widths)")
        self._check("init_std", self.init_std > 0, "> 0")
        self._check("lr", self.lr > 0, "> 0")
        self._check("momentum", 0 <= self.momentum < 1, "in [0, 1)")
        self._check("weight_decay", self.weight_decay >= 0, "≥ 0")
        self._check("lr_drop_factor", self.lr_drop_factor > 0, "> 0")
        self._check("batch_size", 0 < self.batch_size <= INT32_MAX, f"a positive integer ≤ {INT32_MAX}")
        self._check("eval_every", 0 < self.eval_every <= INT32_MAX, f"a positive integer ≤ {INT32_MAX}")
        self._check("checkpoint_every", 0 <= self.checkpoint_every <= INT32_MAX and (
            self.eval_every < 1 or self.checkpoint_every % self.eval_every == 0),
            f"0 (no mid-round checkpoints) or a positive multiple of eval_every={self.eval_every} (iterations)")
        self._check("iterations", 0 < self.iterations <= INT32_MAX and self.iterations % self.eval_every == 0,
              f"a positive multiple of eval_every={self.eval_every} (at most {INT32_MAX})")
        self._check("lr_drops", all(0 < t < self.iterations for t in self.lr_drops),
              f"iterations in (0, iterations={self.iterations})")
        self._check("lr_drops", len(set(self.lr_drops)) == len(self.lr_drops), "distinct iterations")
        self._check("warmup_iterations", 0 <= self.warmup_iterations <= self.iterations,
              f"in [0, iterations={self.iterations}]")
        if self.rewind_iteration >= self.iterations:
            raise ConfigError(
                f"rewind_iteration={self.rewind_iteration} is not valid: it is beyond training, which ends at "
                f"iterations={self.iterations}; must be a multiple of eval_every={self.eval_every} "
                f"in [0, iterations={self.iterations})")
        self._check("rewind_iteration", 0 <= self.rewind_iteration and self.rewind_iteration % self.eval_every == 0,
              f"a multiple of eval_every={self.eval_every} in [0, iterations={self.iterations})")

    def _validate_pruning(self) -> None:
        """Pruning, controls, rounds and seeds."""
        self._check("prune_rate", 0 < self.prune_rate < 1, "a fraction in (0, 1) of the surviving weights")
        self._check("layer_rates", all(p.strip() for p, _ in self.layer_rates),
              "layer:rate pairs with a non-empty layer name (or glob) before the ':'")
        self._check("layer_rates", all(0 <= r <= 1 for _, r in self.layer_rates), "layer:rate pairs with rates in [0, 1]")
        self._check("layer_rates", len({p for p, _ in self.layer_rates}) == len(self.layer_rates),
              "layer:rate pairs naming each layer (or glob) once")
        self._check("layer_rates", not self.layer_rates or self.scope == "layerwise",
              "empty with scope=global, which prunes one pool of all layers at prune_rate (per-layer rates "
              "are for scope=layerwise); drop them with --set layer_rates= (or layer_rates=() in Python)")
        self._check("exclude", all(p.strip() for p in self.exclude), "non-empty layer names (or globs)")
        self._check("shuffle_layers", len(self.shuffle_layers) > 0 and all(p.strip() for p in self.shuffle_layers),
              "non-empty layer names (or globs)")
        try:
            parsed = rounds.parse_controls(self.controls)
        except ValueError as e:
            raise ConfigError(f"controls={_show(self.controls)} is not valid: {e}") from None
        self._check("controls", not any(n in rounds.FROM_ITERATION_0 for n, _ in parsed) or self.rewind_step() == 0,
              f"without {', '.join(sorted(rounds.FROM_ITERATION_0))} when rounds start at iteration k > 0 (they "
              f"start from θ0 at iteration 0, and controls train in the tickets' program, which starts at k)")
        held = self.strategy in rounds.RESTARTS and rounds.RESTARTS[self.strategy].hold_lr is not None
        self._check("controls", not any(n in rounds.FROM_ITERATION_0 for n, _ in parsed) or not held,
              f"without {', '.join(sorted(rounds.FROM_ITERATION_0))} with strategy={self.strategy} (they train "
              f"θ0 on the learning-rate schedule, and controls train in the tickets' program, whose learning rate "
              f"is held at one value)")
        self._check("densities", all(0 < d <= 1 for d in self.densities), "fractions remaining in (0, 1]")
        self._check("densities", all(a > b for a, b in zip(self.densities, self.densities[1:])),
              "strictly decreasing fractions remaining (one per round 1, 2, ...)")
        self._check("densities", not self.densities or self.mode in rounds.FROM_DENSE,
              f"empty unless mode is one of {', '.join(sorted(rounds.FROM_DENSE))} (they prune the dense mask to a "
              f"density per round)")
        self._check("rounds", self.rounds >= 1, "≥ 1 (round 0 is the dense network)")
        self._check("rounds", self.rounds <= MAX_ROUNDS,
              f"≤ {MAX_ROUNDS} (round directories are numbered round_000 … round_{MAX_ROUNDS - 1})")
        self._check("rounds", not self.densities or self.rounds <= len(self.densities) + 1,
              f"≤ len(densities)+1 = {len(self.densities) + 1}")
        self._check("seeds", self.seeds >= 1, "≥ 1")
        self._check("seed", 0 <= self.seed < SEED_LIMIT, f"in [0, {SEED_LIMIT - 1}] (JAX seeds are 32-bit)")
        self._check("seeds", self.seed + self.seeds <= SEED_LIMIT,
              f"≤ {SEED_LIMIT} - seed = {SEED_LIMIT - self.seed} (tickets use the 32-bit seeds "
              f"seed … seed+seeds-1, seed={self.seed})")


# The configuration's sections: {section: {key: field}}. ``--set section.key=value``,
# ``Config.replace(**{"section.key": value})``, a nested ``from_dict`` and ``Config.nested()``
# use them; each field is in exactly one section, and its own name stays a key too (the flat
# names runs were recorded with, which name their directories' hash).
SECTIONS = {
    "data": {"name": "dataset", "validation_size": "validation_size", "split_seed": "split_seed",
             "augment": "augment"},
    "model": {"name": "model", "widths": "widths", "args": "model_args", "init": "init", "init_std": "init_std"},
    "training": {k: k for k in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "lr_drops",
                                "lr_drop_factor", "warmup_iterations", "batch_size", "iterations", "eval_every",
                                "checkpoint_every", "loss", "early_stop", "patience", "patience_every")},
    "pruning": {k: k for k in ("strategy", "rewind_iteration", "mode", "densities", "scope", "scores", "prune_rate",
                               "layer_rates", "exclude", "flip_round")},
    "controls": {"networks": "controls", "shuffle_layers": "shuffle_layers",
                 "partial_reinit_from": "partial_reinit_from", "partial_reinit_round": "partial_reinit_round"},
    "study": {k: k for k in ("name", "rounds", "seeds", "seed", "sweep", "sweep_values")},
}
ALIASES = {"score": "scores"}  # flat keys that are not fields: score=NAME is scores=(NAME,)


def field_of(key: str) -> str:
    """The field a key names: a field itself, ``section.key`` (:data:`SECTIONS`) or an alias
    (:data:`ALIASES`); anything else raises ConfigError with the nearest valid spelling."""
    types = _field_types()
    if key in types:
        return key
    if key in ALIASES:
        return ALIASES[key]
    section, dot, sub = key.partition(".")
    if not dot:
        raise ConfigError(f"unknown config key {_show(key)}{did_you_mean(key, [*types, *ALIASES])}; valid keys: "
                          f"{', '.join(sorted(types))} (or section.key, sections: {', '.join(SECTIONS)})")
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {_show(section)} in {_show(key)}{did_you_mean(section, SECTIONS)}; "
                          f"sections: {', '.join(SECTIONS)}")
    if sub not in SECTIONS[section]:
        keys = SECTIONS[section]
        raise ConfigError(f"unknown key {_show(sub)} in section {section!r}{did_you_mean(sub, keys)}; its keys: "
                          f"{', '.join(keys)}")
    return SECTIONS[section][sub]


def _flatten_sections(d: dict) -> dict:
    """``from_dict``'s input with its sections (``{"training": {"lr": 0.1}}``) as flat fields; a
    field given twice (flat and in its section, or in two spellings) raises."""
    out, seen = {}, {}
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, dict) and not (k in OBJECT_FIELDS and "type" in v):
            items = [(f"{k}.{sub}", x) for sub, x in v.items()]
        else:
            items = [(k, v)]
        for key, x in items:
            f = field_of(key) if isinstance(key, str) and ("." in key) else key
            if f in out:
                raise ConfigError(f"{_show(key)} and {_show(seen[f])} both set the field {f!r}; give it once")
            out[f], seen[f] = x, key
    return out


def model_module(config: "Config"):
    """The named model's Flax module as the factory builds it from ``config`` (without
    ``model_args``), for the default input shape of the model family."""
    kw = {"widths": config.widths} if _uses_widths(config.model) else {}
    return MODELS[config.model](**kw, init=config.init, init_std=config.init_std).module


def _input_shape(config: "Config") -> tuple[int, ...]:
    return tuple(inspect.signature(MODELS[config.model]).parameters["input_shape"].default)


def _takes_train(module) -> bool:
    return "train" in inspect.signature(module.__call__).parameters


def _uses_widths(model) -> bool:
    """Whether the named model's factory uses ``widths``: it takes them with a non-empty
    default (a fixed architecture, such as the ResNets and VGG, defaults them to ``()``)."""
    if not isinstance(model, str) or model not in MODELS:
        return False
    try:
        p = inspect.signature(MODELS[model]).parameters.get("widths")
    except (TypeError, ValueError):  # a callable without a signature: it decides itself
        return False
    return p is not None and (p.default is inspect.Parameter.empty or bool(p.default))


def _legacy_scores(d: dict) -> dict:
    """``to_dict()`` in the form run directories were named by before ``score`` and ``scores``
    became one field (one score: ``score``; several: ``scores``), so their hashes are kept."""
    d = dict(d)
    s = list(d["scores"])
    d["score"], d["scores"] = (s[0], []) if len(s) == 1 else ("magnitude", s)
    return d


@functools.lru_cache(maxsize=None)
def _cosine(lr: float, warmup: int, iterations: int):
    import optax

    cos = optax.cosine_decay_schedule(lr, max(1, iterations - warmup))
    if not warmup:
        return cos
    warm = optax.linear_schedule(0.0, lr, warmup)
    return optax.join_schedules([warm, cos], [warmup])


def _canonical(config: Config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def _check_object(config: Config, name: str, v) -> None:
    """A field holding your own object: the right kind of object, and no named-only setting
    beside it that it would make meaningless (nothing you set is silently ignored)."""
    import optax

    from ltjax.models import Model

    kind = OBJECT_FIELDS[name]
    if isinstance(v, identity.ObjectRef):
        if v.kind != kind:
            raise ConfigError(f"{name}={v!r} is the record of a {v.kind}, not of a {kind}")
        return
    if kind == "model":
        import flax.linen as nn

        if not isinstance(v, (nn.Module, Model)):
            raise ConfigError(f"model={_show(v)} is not valid: give a model name, a Flax module (flax.linen.Module) "
                              f"or an ltjax.models.Model")
    elif kind == "optimizer":
        if isinstance(v, optax.GradientTransformation) or not callable(v):
            raise ConfigError(f"optimizer={_show(v)} is not valid: give a name ({', '.join(OPTIMIZERS)}) or a "
                              f"factory lr -> optax.GradientTransformation, e.g. lambda lr: optax.adamw(lr, "
                              f"weight_decay=1e-4); ltjax passes the learning-rate schedule (lr, lr_drops, "
                              f"warmup_iterations) offset to each ticket's first iteration, so a rewound ticket "
                              f"continues it (ignore the argument to use a schedule of your own)")
        for f, default in (("weight_decay", 0.0), ("momentum", 0.9)):
            if getattr(config, f) != default:
                raise ConfigError(f"{f}={getattr(config, f)!r} is a setting of the named optimizers, and "
                                  f"optimizer is your own: put it in your optimizer (e.g. optax.adamw's "
                                  f"weight_decay, optax.sgd's momentum) and leave {f}={default}")
    elif kind in ("loss", "schedule"):
        if kind == "schedule" and callable(v):
            return
        if not callable(v):
            if kind == "schedule":
                raise ConfigError(f"schedule={_show(v)} is not valid: give {' or '.join(SCHEDULES)}, or a function "
                                  f"iteration -> learning rate (e.g. optax.cosine_decay_schedule(1e-3, 5000))")
            raise ConfigError(f"loss={_show(v)} is not valid: give {', '.join(LOSSES)} or a function "
                              f"(logits, labels) -> per-example loss")
    else:
        try:
            data_arrays(v)
        except TypeError as e:
            raise ConfigError(f"dataset={_show(v)} is not valid: {e}") from None


def _same(v, default) -> bool:
    return tuple(v) == tuple(default) if isinstance(default, tuple) else v == default


@functools.lru_cache(maxsize=None)
def _field_types_cached() -> tuple:
    hints = typing.get_type_hints(Config)
    return tuple((f.name, hints[f.name]) for f in fields(Config))


def _field_types() -> dict[str, typing.Any]:
    return dict(_field_types_cached())


def _show(v, limit: int = 80) -> str:
    """``repr(v)``, shortened in the middle when long (error messages quote user input)."""
    r = repr(v)
    return r if len(r) <= limit else f"{r[:limit // 2]}...{r[-limit // 4:]} ({len(r)} characters)"


_WHAT = {int: "an integer like 100 or 5e4", float: "a finite number like 0.1", str: "a string",
         bool: "true or false"}
_PLURAL = {int: "integers", float: "finite numbers", str: "strings", bool: "true/false values"}


def _describe(tp) -> str:
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if _is_model_args(inner):
            return "a list of name:value pairs like conv_impl:patches or depth:8,width:4"
        if typing.get_origin(inner) is tuple:
            return "a list of layer:rate pairs like out:0.1,fc*:0.3 (rates finite numbers)"
        return f"a comma-separated list of {_PLURAL[inner]}"
    return _WHAT[tp]


def _type_ok(tp, v) -> bool:
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(v, tuple):
            return False
        if _is_model_args(inner):
            return all(isinstance(x, tuple) and len(x) == 2 and _type_ok(str, x[0]) and _model_arg_ok(x[1])
                       for x in v)
        if typing.get_origin(inner) is tuple:
            return all(isinstance(x, tuple) and len(x) == 2 and _type_ok(str, x[0]) and _type_ok(float, x[1])
                       for x in v)
        return all(_type_ok(inner, x) for x in v)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, float) and math.isfinite(v)
    return isinstance(v, tp)


def _normalize(tp, v):
    """Equivalent values to the field's own type (int → float, numpy scalars, lists → tuples); else unchanged."""
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(v, list):
            v = tuple(v)
        if not isinstance(v, tuple):
            return v
        if _is_model_args(inner):
            return tuple((x[0], _plain(x[1])) if isinstance(x, (list, tuple)) and len(x) == 2 else x for x in v)
        if typing.get_origin(inner) is tuple:
            return tuple((_normalize(str, x[0]), _normalize(float, x[1]))
                         if isinstance(x, (list, tuple)) and len(x) == 2 else x for x in v)
        return tuple(_normalize(inner, x) for x in v)
    if isinstance(v, bool):
        return v
    if tp is float and isinstance(v, numbers.Real) and type(v) is not float:
        try:
            return float(v)
        except (OverflowError, ValueError, TypeError):
            return v
    if tp is int and isinstance(v, numbers.Integral) and type(v) is not int:
        return int(v)
    return v


def _is_model_args(inner) -> bool:
    return typing.get_origin(inner) is tuple and typing.get_args(inner)[1] is ModelArg


def _model_arg_ok(v) -> bool:
    return isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


def _plain(v):
    """A NumPy scalar as the Python scalar of its kind (a bool stays a bool)."""
    if isinstance(v, (bool, str)) or type(v) in (int, float):
        return v
    if isinstance(v, numbers.Integral):
        return bool(v) if type(v).__name__ == "bool_" else int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v


def _model_arg(text: str):
    """CLI text of a model_args value: true/false, an integer, a finite number, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for tp in (int, float):
        try:
            x = tp(text)
        except ValueError:
            continue
        if tp is int or math.isfinite(x):
            return x
    return text


def _coerce_model_args(key: str, v, whole) -> tuple:
    """``model_args`` from CLI text (``name:value,...``) or JSON (``[[name, value], ...]``)."""
    args = []
    for item in v:
        if isinstance(item, str):
            name, sep, value = item.partition(":")
            if not sep or not name.strip().isidentifier() or not value.strip():
                raise ConfigError(f"{key}={_show(whole)} is not valid: {_show(item)} is not a name:value pair; "
                                  f"must be attribute:value pairs like conv_impl:patches or depth:8,width:4")
            item = (name.strip(), _model_arg(value.strip()))
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                or not item[0].isidentifier() or not _model_arg_ok(_plain(item[1]))):
            raise ConfigError(f"{key}={_show(whole)} is not valid: {_show(item)} is not a name:value pair with a "
                              f"number, true/false or text value")
        args.append((item[0], _plain(item[1])))
    return tuple(args)


def did_you_mean(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a misspelt ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_value(key: str, text: str):
    """Parse a ``--set`` value by the field's type: ``300,100`` → (300, 100), ``out:0.1`` → (("out", 0.1),).
    ``key`` is a field, ``section.key`` (see :data:`SECTIONS`) or an alias (``score``)."""
    f = field_of(key)
    return _coerce(f, text.strip(), key)


def _scalar(tp, v):
    """``v`` (CLI text or a JSON value) as ``tp``; raises ValueError when it is not one."""
    if tp is str:
        if not isinstance(v, str):
            raise ValueError(v)
        return v
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
            return v.lower() in ("true", "1", "yes")
        raise ValueError(v)
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(v)  # true/false, null, lists and the like are never numbers
    if tp is int:
        if isinstance(v, int):
            return v
        if isinstance(v, str):
            try:
                return int(v)
            except ValueError:  # accept 5e4, 2.0
                v = float(v)
        if not math.isfinite(v) or not v.is_integer():
            raise ValueError(v)
        return int(v)
    x = float(v)  # OverflowError for an int beyond float range
    if not math.isfinite(x):
        raise ValueError(v)
    return x


def _scalar_or_raise(key: str, tp, v, whole=None):
    try:
        return _scalar(tp, v)
    except (TypeError, ValueError, OverflowError):
        if whole is None:
            raise ConfigError(f"{key}={_show(v)} is not a valid {tp.__name__}: must be {_WHAT[tp]}") from None
        raise ConfigError(f"{key}={_show(whole)} is not valid: {_show(v)} is not a valid {tp.__name__} "
                          f"(must be {_WHAT[tp]})") from None


def _coerce(field: str, v, key: str | None = None):
    """Turn a JSON value or CLI string into the field's Python type, or raise ConfigError
    (naming ``key``, the spelling the user wrote, default the field)."""
    tp = _field_types()[field]
    key = key or field
    whole = v
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{key}={_show(v)} is not valid: must be {_describe(tp)}")
        if _is_model_args(inner):
            return _coerce_model_args(key, v, whole)
        if typing.get_origin(inner) is tuple:  # layer_rates: ("layer", rate) pairs
            pairs = []
            for item in v:
                if isinstance(item, str):
                    name, sep, rate = item.partition(":")
                    if not sep or not name.strip():
                        raise ConfigError(f"{key}={_show(whole)} is not valid: {_show(item)} is not a layer:rate "
                                          f"pair; must be layer:rate pairs like out:0.1,fc*:0.3")
                    item = (name.strip(), rate.strip())
                if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
                    raise ConfigError(f"{key}={_show(whole)} is not valid: {_show(item)} is not a layer:rate pair; "
                                      f"must be layer:rate pairs like out:0.1,fc*:0.3")
                try:
                    rate = _scalar(float, item[1])
                except (TypeError, ValueError, OverflowError):
                    raise ConfigError(f"{key}={_show(whole)} is not valid: rate {_show(item[1])} of layer "
                                      f"{_show(item[0])} is not a finite number; rates must be in [0, 1]") from None
                pairs.append((item[0], rate))
            return tuple(pairs)
        return tuple(_scalar_or_raise(key, inner, x, whole) for x in v)
    return _scalar_or_raise(key, tp, v)

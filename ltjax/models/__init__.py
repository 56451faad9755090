"""Models: Flax modules plus what ltjax needs to know about them (a :class:`Model`).

A :class:`Model` bundles a Flax module with its input shape and a rule for which leaves
are prunable. Kernels of dense and conv layers are prunable; biases and normalization
parameters are not.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import registry
from ltjax.masks import path_str
from ltjax.models import initializers
from ltjax.models.conv import ConvNet
from ltjax.models.mlp import MLP
from ltjax.models.resnet import CifarResNet, ImageNetResNet
from ltjax.models.vgg import CifarVGG

PyTree = Any


def kernels_are_prunable(path, leaf) -> bool:
    """Default rule: a leaf is prunable iff it is named ``kernel``."""
    return path_str(path).split("/")[-1] == "kernel"


STATE = "batch_stats"  # the params-tree key holding a model's batch-norm running statistics


class Model(NamedTuple):
    """A Flax module with its input shape and its prunable-leaf rule.

    ``init(key) -> params`` and ``apply(params, x) -> logits`` are pure and vmappable.
    ``params`` is the module's ``"params"`` collection (no ``{"params": ...}`` wrapper).

    Models with batch norm (``stateful=True``) keep their running statistics in the same
    tree under the key ``"batch_stats"``, so they are stored, reset and rewound with the
    weights (θ0 holds the initial statistics, θk those at iteration k) and vmap over tickets
    like them; no statistic is prunable. Training splits them off (:meth:`split`): the
    optimizer never sees them. ``apply`` evaluates with the running statistics;
    ``apply_train`` normalizes with the batch's statistics and returns the updated ones.

    ``train_flag``: the module's ``__call__`` takes ``train=`` (True in training, False in
    evaluation); default: exactly when ``stateful``. ``rngs``: random streams the training
    forward pass draws (for example ``("dropout",)``), each fed a key derived from the
    ticket and the iteration.
    """

    module: Any
    input_shape: tuple[int, ...]
    num_outputs: int
    is_prunable: Callable[[tuple, Any], bool] = kernels_are_prunable
    stateful: bool = False
    train_flag: bool | None = None
    rngs: tuple[str, ...] = ()

    def _flag(self, train: bool) -> dict:
        on = self.stateful if self.train_flag is None else self.train_flag
        return {"train": train} if on else {}

    def init(self, key: jax.Array) -> PyTree:
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        if not self.stateful:
            return self.module.init(key, x, **self._flag(False))["params"]
        v = self.module.init(key, x, train=False)
        return {**v["params"], STATE: v[STATE]}

    def split(self, params: PyTree) -> tuple[PyTree, dict]:
        """``(weights, model state)``: the running statistics apart from what is trained."""
        if not self.stateful:
            return params, {}
        return {k: v for k, v in params.items() if k != STATE}, {STATE: params[STATE]}

    def merge(self, weights: PyTree, state: dict) -> PyTree:
        """Inverse of :meth:`split`."""
        return {**weights, **state} if self.stateful else weights

    def apply(self, params: PyTree, x: jax.Array) -> jax.Array:
        weights, state = self.split(params)
        return self.module.apply({"params": weights, **state}, x, **self._flag(False))

    def apply_train(self, params: PyTree, x: jax.Array, rng: jax.Array | None = None) -> tuple[jax.Array, PyTree]:
        """Training-mode forward pass: ``(logits, params with updated running statistics)``."""
        weights, state = self.split(params)
        logits, new = self.forward_train(weights, state, x, rng)
        return logits, self.merge(weights, new)

    def forward_train(self, weights: PyTree, state: dict, x: jax.Array,
                      rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Training-mode forward pass on split parameters: ``(logits, new model state)``."""
        kw = self._flag(True)
        if self.rngs and rng is not None:
            kw["rngs"] = {name: jax.random.fold_in(rng, i) for i, name in enumerate(self.rngs)}
        if not self.stateful:
            return self.module.apply({"params": weights}, x, **kw), state
        logits, new = self.module.apply({"params": weights, **state}, x, mutable=[STATE], **kw)
        return logits, {STATE: new[STATE]}


def mlp(
    widths: tuple[int, ...] = (300, 100),
    *,
    input_shape: tuple[int, ...] = (28, 28, 1),
    num_outputs: int = 10,
    init: str = "trunc_normal",
    init_std: float = 0.1,
) -> Model:
    """Fully connected ReLU network; ``widths=(300, 100)`` is LeNet-300-100, ``(h,)`` with
    ``input_shape=(2,), num_outputs=1`` is the 2-h-1 XOR network.

    Layers are named ``fc1 … fcL`` and ``out``.
    """
    kernel_init = initializers.get(init, std=init_std)
    module = MLP(widths=tuple(widths), num_outputs=num_outputs, kernel_init=kernel_init)
    return Model(module=module, input_shape=tuple(input_shape), num_outputs=num_outputs)


def _family(name: str, make_module: Callable[[tuple[int, ...], int, Callable], Any], *, widths: tuple[int, ...],
            input_shape: tuple[int, ...], init: str, stateful: bool, doc: str) -> Callable[..., Model]:
    """A model factory with ``mlp``'s keywords; ``make_module(widths, num_outputs, kernel_init)``."""

    def factory(widths: tuple[int, ...] = widths, *, input_shape: tuple[int, ...] = input_shape,
                num_outputs: int = 10, init: str = init, init_std: float = 0.1) -> Model:
        module = make_module(tuple(widths), num_outputs, initializers.get(init, std=init_std))
        return Model(module=module, input_shape=tuple(input_shape), num_outputs=num_outputs, stateful=stateful)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


def _convnet(filters):
    return lambda w, n, k: ConvNet(filters=filters, widths=w, num_outputs=n, kernel_init=k)


_CONV = dict(widths=(256, 256), input_shape=(32, 32, 3), init="glorot_normal", stateful=False)
_BN = dict(widths=(), input_shape=(32, 32, 3), init="kaiming_normal", stateful=True)

conv2 = _family("conv2", _convnet((64,)), **_CONV, doc=(
    "Conv-2 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool``, then FC ``widths``.\n\n"
    "Layers ``conv1, conv2, fc1 … fcL, out``; ``widths`` are the hidden FC widths (default 256, 256)."))
conv4 = _family("conv4", _convnet((64, 128)), **_CONV, doc=(
    "Conv-4 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool, 128, 128, pool``, then FC "
    "``widths``. Layers ``conv1 … conv4, fc1 … fcL, out``."))
conv6 = _family("conv6", _convnet((64, 128, 256)), **_CONV, doc=(
    "Conv-6 of Frankle & Carbin (ICLR 2019, Figure 2): ``64, 64, pool, 128, 128, pool, 256, 256, "
    "pool``, then FC ``widths``. Layers ``conv1 … conv6, fc1 … fcL, out``."))
resnet20 = _family("resnet20", lambda w, n, k: CifarResNet(depth=20, num_outputs=n, kernel_init=k), **_BN, doc=(
    "ResNet-20 for CIFAR-10 (He et al. 2016; OpenLTH ``cifar_resnet_20``), with batch norm; "
    "``widths`` is ignored (the architecture is fixed); 270,896 weights."))
resnet56 = _family("resnet56", lambda w, n, k: CifarResNet(depth=56, num_outputs=n, kernel_init=k), **_BN, doc=(
    "ResNet-56 for CIFAR-10 (He et al. 2016; OpenLTH ``cifar_resnet_56``), with batch norm."))
resnet18 = _family("resnet18", lambda w, n, k: ImageNetResNet(depth=18, num_outputs=n, small_inputs=True,
                                                              kernel_init=k),
                   **{**_BN, "input_shape": (64, 64, 3)}, doc=(
    "ResNet-18 with a 3×3 stride-1 stem and no max pool, the usual form for 64×64 TinyImageNet "
    "images (the layerwise-importance paper's ResNet-18); batch norm; ``widths`` is ignored."))
resnet50 = _family("resnet50", lambda w, n, k: ImageNetResNet(depth=50, num_outputs=n, kernel_init=k),
                   **{**_BN, "input_shape": (224, 224, 3)}, doc=(
    "ResNet-50 in the ImageNet form (torchvision v1.5 bottlenecks); batch norm; ``widths`` is ignored."))
vgg16 = _family("vgg16", lambda w, n, k: CifarVGG(num_outputs=n, kernel_init=k), **_BN, doc=(
    "VGG-16 for CIFAR-10 with batch norm (OpenLTH ``cifar_vgg_16``); ``widths`` is ignored."))


MODELS: dict[str, Callable[..., Model]] = {"mlp": mlp, "conv2": conv2, "conv4": conv4, "conv6": conv6,
                                           "resnet20": resnet20, "resnet56": resnet56, "resnet18": resnet18,
                                           "resnet50": resnet50, "vgg16": vgg16}


def wrap(module: Any, *, input_shape: tuple[int, ...], num_outputs: int,
         is_prunable: Callable[[tuple, Any], bool] = kernels_are_prunable,
         rngs: tuple[str, ...] = ("dropout",)) -> Model:
    """Your Flax module as a :class:`Model`, with nothing registered.

    Its ``__call__(x)`` maps a batch of inputs of ``input_shape`` to ``num_outputs`` logits. If
    it takes ``train``, it is called with ``train=True`` in training (then ``rngs``, by
    default ``dropout``, get a key per ticket and iteration) and ``train=False`` in
    evaluation; a ``batch_stats`` collection (batch norm, which needs ``train``) is kept as
    model state. Prunable leaves: ``is_prunable`` (default: every ``kernel``).
    """
    import inspect

    takes_train = "train" in inspect.signature(module.__call__).parameters
    x = jnp.zeros((1, *input_shape), jnp.float32)
    kw = {"train": False} if takes_train else {}
    try:
        variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, **kw))
        logits = jax.eval_shape(lambda v: module.apply(v, x, **kw), variables)
    except Exception as e:  # noqa: BLE001 - the module's own error, named with what it was given
        raise ValueError(f"{type(module).__name__} cannot be applied to inputs of shape {tuple(input_shape)}: "
                         f"{type(e).__name__}: {e}") from None
    other = sorted(set(variables) - {"params", STATE})
    if other:
        raise ValueError(f"{type(module).__name__} has variable collections {other}; ltjax trains 'params' and "
                         f"keeps '{STATE}' (batch norm) as model state")
    if STATE in variables and not takes_train:
        raise ValueError(f"{type(module).__name__} has {STATE} but its __call__ takes no `train` argument, "
                         f"so training and evaluation cannot be told apart")
    if getattr(logits, "shape", None) != (1, num_outputs):
        raise ValueError(f"{type(module).__name__} returns shape {getattr(logits, 'shape', type(logits).__name__)} "
                         f"for one input; the data needs (batch, {num_outputs}) logits"
                         + (" (two classes: one logit, sigmoid loss)" if num_outputs == 1 else ""))
    return Model(module=module, input_shape=tuple(input_shape), num_outputs=num_outputs, is_prunable=is_prunable,
                 stateful=STATE in variables, train_flag=takes_train, rngs=tuple(rngs) if takes_train else ())


def init_with_std(model: Model, key: jax.Array, std) -> PyTree:
    """θ0 of ``model`` with its kernels drawn at standard deviation ``std`` (a traced value:
    vmap over keys and stds runs an init-std sweep, as the 2018 paper's, in one program).

    ``model`` must be built with ``init="trunc_normal", init_std=1`` (checked): its truncated
    normal draws times 1, scaled here by ``std``, are bitwise the draws of the model built with
    ``init_std=std`` (jax's truncated normal is the unit draw times the std).
    """
    _check_unit_trunc_normal(model)
    params = model.init(key)
    return jax.tree_util.tree_map_with_path(
        lambda p, a: a * jnp.asarray(std, a.dtype) if model.is_prunable(p, a) else a, params)


def run_init(fn: Callable, *args) -> PyTree:
    """``jax.jit(fn)(*args)`` for a program that draws initial weights (``jax.vmap(model.init)``,
    a reinitialization), compiled on CPU at XLA's backend optimization level 1.

    Such a program runs once per study, yet at the default level LLVM spends about 1.5 s per
    random kernel on its unrolled threefry hash and normal transforms (a ResNet-20's vmapped
    init: 15 s, at level 1: 2 s; a two-layer MLP's: 4-6 s, at level 1: 0.6 s). Level 1 draws
    the same bits (the suite checks it on its machine for every initializer,
    tests/test_init_program.py); other backends compile as usual."""
    lowered = jax.jit(fn).lower(*args)
    compiled = None
    if jax.default_backend() == "cpu":
        try:
            compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 1})
        except (TypeError, ValueError):  # a JAX without per-program compiler options
            pass
    return (compiled or lowered.compile())(*args)


def _check_unit_trunc_normal(model: Model) -> None:
    with jax.ensure_compile_time_eval():
        p0 = model.init(jax.random.PRNGKey(0))
    for path, a in jax.tree_util.tree_flatten_with_path(p0)[0]:
        if model.is_prunable(path, a) and a.size >= 1000:
            a = np.asarray(a, np.float64)
            # N(0, 1) cut at ±2: std 0.880; a layer of ≥ 1000 draws lands within a few percent
            if np.abs(a).max() > 2 or not 0.8 < a.std() < 0.96:
                raise ValueError(f"init_with_std needs a model built with init='trunc_normal', init_std=1 (the std "
                                 f"scales its unit draws); kernel {path_str(path)} has std {a.std():.3g}")


def register(name: str, factory: Callable[..., Model], *, replace: bool = False) -> None:
    """Make ``factory`` available as ``Config(model=name)`` and :func:`build`. The factory takes
    ``mlp``'s keywords (``widths``, ``input_shape``, ``num_outputs``, ``init``, ``init_std``;
    it may ignore some) and returns a :class:`Model`. A name already taken raises unless
    ``replace``. Registration lives in this process: register before ``lottery.run``."""
    registry.add(MODELS, "model", name, factory, replace, "a factory function returning a Model")


def build(name: str, **kwargs) -> Model:
    """Model by registry name; an unknown name raises with the valid choices."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


__all__ = [
    "CifarResNet", "CifarVGG", "ConvNet", "ImageNetResNet", "MLP", "Model", "STATE", "build", "conv2", "conv4",
    "conv6", "initializers", "init_with_std", "kernels_are_prunable", "mlp", "register", "run_init", "wrap",
    "resnet18", "resnet20", "resnet50", "resnet56", "vgg16", "MODELS",
]

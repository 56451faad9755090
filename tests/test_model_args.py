"""``model_args``: a named model's module attributes from the configuration (``--set
model.args=conv_impl:patches``), checked against the module before anything runs, recorded in
the hash only when set, and applied to the model a study trains."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from ltjax import cli, lottery, presets
from ltjax import data as D
from ltjax.config import Config, ConfigError


def test_model_args_set_the_modules_attributes():
    ds = D.load("synthetic_mnist", validation_size=64)
    cfg = presets.get("resnet20_cifar10_ltr").with_overrides(["model.args=depth:8,width:4"])
    assert cfg.model_args == (("depth", 8), ("width", 4))
    model = lottery.build_model(cfg, ds)
    assert (model.module.depth, model.module.width) == (8, 4) and model.stateful
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    assert sorted(k for k in params if k.startswith("s")) == ["s1b1", "s2b1", "s3b1"]  # n = 1 block per segment
    assert params["conv"]["kernel"].shape == (3, 3, 1, 4)
    conv = lottery.build_model(presets.get("conv2_fashion_mnist_early").with_overrides(
        ["model_args=conv_impl:patches"]), ds)
    assert conv.module.conv_impl == "patches"


def test_hash_changes_only_when_set_and_the_record_reads_back():
    base = presets.get("conv2_fashion_mnist_early")
    assert base.replace(model_args=()).hash() == base.hash()  # unset: runs made before the field keep their name
    patched = base.with_overrides(["model.args=conv_impl:patches"])
    assert patched.hash() != base.hash()
    back = Config.from_dict(json.loads(json.dumps(patched.to_dict())))
    assert back == patched and back.hash() == patched.hash()
    assert Config(model="resnet20", widths=(), model_args=[["depth", np.int64(8)]]).model_args == (("depth", 8),)


@pytest.mark.parametrize("args, expect", [
    ("conv_imp:patches", "no attribute 'conv_imp' that a config can set (did you mean 'conv_impl'?)"),
    ("conv_impl:3", "conv_impl of ConvNet is a string (its default is 'xla'), not 3"),
    ("conv_impl:bogus", "not valid for model 'conv2': ValueError: conv impl 'bogus'"),
    ("num_outputs:3", "set by the data"),
    ("widths:3", "set by the widths field"),
    ("conv_impl", "is not a name:value pair"),
    ("conv_impl:patches,conv_impl:xla", "distinct attribute names"),
    ("kernel_init:x", "no attribute 'kernel_init' that a config can set"),
])
def test_bad_model_args_are_named(args, expect):
    with pytest.raises(ConfigError, match="model(_|.)args=") as e:
        presets.get("conv2_fashion_mnist_early").with_overrides([f"model.args={args}"])
    assert expect in str(e.value)


def test_model_args_need_a_named_model():
    from ltjax.models.mlp import MLP

    with pytest.raises(ConfigError, match="empty with your own module"):
        Config(model=MLP(widths=(8,)), model_args=(("features", 3),)).validate()


def test_the_run_records_the_set_attributes():
    from ltjax import identity

    ds = D.load("synthetic_mnist", validation_size=64)
    cfg = presets.get("resnet20_cifar10_ltr").with_overrides(["model.args=depth:8,width:4"])
    assert cli._parser().parse_args(["run", "resnet20_cifar10_ltr", "--set", "model.args=depth:8,width:4"]).overrides
    record = identity.model_identity(lottery.build_model(cfg, ds))  # what model.json keeps: a resume checks it
    assert "depth = 8" in record["repr"] and "width = 4" in record["repr"]
    assert record != identity.model_identity(lottery.build_model(presets.get("resnet20_cifar10_ltr"), ds))

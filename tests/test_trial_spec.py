"""The trial specification: frozen, typed, and a misspelt setting fails where the spec is made."""
import dataclasses
import pickle

import numpy as np
import pytest

from minigrad.study import plan
from minigrad.study.config import make_config
from minigrad.training.spec import TrialSpec


def test_a_misspelt_setting_fails_where_the_spec_is_made():
    with pytest.raises(TypeError, match="sampeler"):
        TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=0, steps=10, sampeler="stratified")
    # negative control: spelt right, the same spec is made and keeps the setting
    assert TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=0, steps=10, sampler="stratified").sampler == "stratified"


def test_numbers_are_stored_as_plain_python_numbers_and_held_to_the_settings_table():
    spec = TrialSpec(run_id="r", batch_size=np.int64(8), lr=np.float32(0.5), seed=np.int32(3), steps=np.int64(10))
    assert type(spec.batch_size) is int and type(spec.seed) is int and type(spec.lr) is float
    assert type(spec.steps) is int
    with pytest.raises(ValueError, match="trial 'r': batch_size must be an integer"):
        TrialSpec(run_id="r", batch_size=8.5, lr=0.1, seed=0, steps=10)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        TrialSpec(run_id="r", batch_size=8, lr="0.1", seed=0, steps=10)
    with pytest.raises(ValueError, match="seed must be an integer"):
        TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=True, steps=10)
    # the vocabularies and ranges are the table's: an unknown sampler, momentum 1
    with pytest.raises(ValueError, match="sampler must be one of shuffle, replacement, stratified"):
        TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=0, steps=10, sampler="sorted")
    with pytest.raises(ValueError, match="momentum"):
        TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=0, steps=10, momentum=1.0)
    # negative control: bookkeeping fields are not settings (a grid offset below 1 is a fine lr_factor)
    assert TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=0, steps=10, lr_factor=0.25).lr_factor == 0.25


def test_a_spec_is_frozen_and_replace_makes_a_checked_copy():
    spec = plan.trial("tune", 32, 0.1, 0, 0.2, steps=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lr = 0.2
    copy = spec.replace(evaluate_train=True)
    assert copy.evaluate_train and not spec.evaluate_train and copy.run_id == spec.run_id
    with pytest.raises(ValueError):
        spec.replace(batch_size="big")


def test_a_spec_pickles_to_a_worker_unchanged():
    spec = plan.trial("tune", 32, 0.1, 2, 0.2, steps=100)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.gns == dict(batch_size=256, batches=2)  # tuning trials record the noise scale
    assert plan.trial("reference", 32, 0.1, 0, None, epochs=2.0).gns is None


def test_an_override_left_at_none_takes_the_configuration():
    config = make_config(sampler="stratified")
    spec = TrialSpec(run_id="r", batch_size=8, lr=0.1, seed=0, steps=10)
    assert spec.setting("sampler", config) == "stratified"
    assert spec.replace(sampler="shuffle").setting("sampler", config) == "shuffle"
    assert spec.replace(momentum=0.0).setting("momentum", config) == 0.0  # 0 is a value, not "unset"

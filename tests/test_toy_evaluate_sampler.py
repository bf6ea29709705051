"""``eimsdk_toy.evaluate``'s sampling settings: scheduler overrides reach the pipeline's sampling, are recorded in
the report, are undone by an empty setting, and a wrong one is refused with a message that names the fix."""

from __future__ import annotations

import pytest
import torch

import diffusers
from eimsdk.errors import InputError
from eimsdk_toy import default_model_path
from eimsdk_toy.evaluate import (evaluate_sampling, load_pipeline, main, parse_scheduler_options, sample_images,
                                 with_scheduler)


def test_scheduler_options_parse_booleans_numbers_and_names():
    options = parse_scheduler_options(["stochastic_sampling=TRUE", "shift=1.5", "solver_order=3",
                                       "scheduler=FlowMatchHeunDiscreteScheduler", "algorithm_type=sde-dpmsolver++"])
    assert options == {"stochastic_sampling": True, "shift": 1.5, "solver_order": 3,
                       "scheduler": "FlowMatchHeunDiscreteScheduler", "algorithm_type": "sde-dpmsolver++"}
    assert isinstance(options["solver_order"], int) and isinstance(options["shift"], float)
    for bad in ("shift", "=1", "shift="):
        with pytest.raises(InputError, match="KEY=VALUE"):
            parse_scheduler_options([bad])


@pytest.fixture(scope="module")
def sd3():
    return load_pipeline(default_model_path("sd3"))


def test_with_scheduler_overrides_swaps_and_restores_the_shipped_scheduler(sd3):
    pipe, _ = sd3
    shipped = pipe.scheduler
    with_scheduler(pipe, {"stochastic_sampling": True, "shift": 1.5})
    assert pipe.scheduler is not shipped
    assert pipe.scheduler.config.stochastic_sampling is True and pipe.scheduler.config.shift == 1.5
    assert shipped.config.stochastic_sampling is False  # the shipped one is untouched
    with_scheduler(pipe, {"scheduler": "FlowMatchHeunDiscreteScheduler"})
    assert isinstance(pipe.scheduler, diffusers.FlowMatchHeunDiscreteScheduler)
    assert pipe.scheduler.config.shift == shipped.config.shift  # built from the shipped config, not the last one
    with_scheduler(pipe, {})
    assert pipe.scheduler is shipped


def test_with_scheduler_refuses_unknown_keys_and_classes_naming_the_fix(sd3):
    pipe, _ = sd3
    shipped = pipe.scheduler
    with pytest.raises(InputError, match=r"\['stochastic'\].*pass keys of .*stochastic_sampling"):
        with_scheduler(pipe, {"stochastic": True})
    with pytest.raises(InputError, match="not a diffusers scheduler class.*FlowMatchEulerDiscreteScheduler"):
        with_scheduler(pipe, {"scheduler": "NoSuchScheduler"})
    with pytest.raises(InputError, match="not a diffusers scheduler class"):
        with_scheduler(pipe, {"scheduler": "PixArtAlphaPipeline"})
    with pytest.raises(InputError, match="refused by DPMSolverMultistepScheduler.*pass values"):
        with_scheduler(pipe, {"scheduler": "DPMSolverMultistepScheduler", "algorithm_type": "no-such-solver"})
    assert pipe.scheduler is shipped


def test_a_scheduler_setting_changes_the_samples_and_the_report_records_it(sd3):
    pipe, family = sd3
    prompts = ["A large red circle at the top left on a black background"] * 2
    kw = dict(steps=6, guidance=4.0, seed=3)
    plain = sample_images(pipe, family, prompts, **kw)
    assert torch.equal(plain, sample_images(pipe, family, prompts, **kw))  # deterministic without the option
    with_scheduler(pipe, {"stochastic_sampling": True})
    stochastic = sample_images(pipe, family, prompts, **kw)
    with_scheduler(pipe, {})
    assert (stochastic - plain).abs().mean() > 1e-3
    report = evaluate_sampling(pipe, family, 2, steps=2, batch=2, seed=5, scheduler={"stochastic_sampling": True})
    assert report["scheduler"] == {"class": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": True}
    assert report["seed"] == 5


def test_the_cli_refuses_a_bad_scheduler_option_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(default_model_path("sd3")), "--n", "1", "--inversion-n", "0", "--scheduler", "shift"])
    assert exc.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err

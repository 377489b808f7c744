"""Which engine builds the SSR set (`config.ssr.engine`), and the Ray actor pools' sizes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from carina.workloads.config import ExitCode, FinetuneConfig, SSREngine, SSRSpec
from carina.workloads.errors import WorkerError
from carina.workloads.finetune.ssr_ray import choose_engine, plan_pools


def test_auto_takes_ray_from_the_row_threshold_on() -> None:
    spec = SSRSpec(engine="auto", ray_min_rows=1000)
    assert choose_engine(spec, 999, ray_available=True) == SSREngine.PLAIN
    assert choose_engine(spec, 1000, ray_available=True) == SSREngine.RAY


def test_auto_without_ray_falls_back_to_the_plain_loop_and_says_so(capsys) -> None:
    spec = SSRSpec(engine="auto", ray_min_rows=10)
    assert choose_engine(spec, 50, ray_available=False) == SSREngine.PLAIN
    note = json.loads(capsys.readouterr().out)
    assert note["event"] == "ssr-engine"
    assert "carina[ray]" in note["note"]


def test_asking_for_ray_without_it_is_a_config_error_naming_field_and_extra() -> None:
    with pytest.raises(WorkerError) as err:
        choose_engine(SSRSpec(engine="ray"), 5, ray_available=False)
    assert err.value.exit_code == ExitCode.BAD_CONFIG
    assert "config.ssr.engine" in err.value.message
    assert "pip install 'carina[ray]'" in err.value.message


def test_plain_and_ray_are_taken_at_their_word() -> None:
    assert choose_engine(SSRSpec(engine="plain"), 10**7, ray_available=True) == SSREngine.PLAIN
    assert choose_engine(SSRSpec(engine="ray"), 1, ray_available=True) == SSREngine.RAY


def test_two_half_cpu_pools_fit_two_cpus_and_two_whole_cpu_pools_do_not() -> None:
    plan = plan_pools(SSRSpec(actor_cpus=0.5), cpus=2, gpus=0)
    assert (plan.generators, plan.judges, plan.actor_cpus) == (1, 1, 0.5)
    assert plan.gpus_per_generator == 0.0
    # Two pools at one CPU each on two CPUs leave Ray Data's own tasks none: the job hangs.
    with pytest.raises(WorkerError, match=r"config\.ssr\.actorCpus") as err:
        plan_pools(SSRSpec(actor_cpus=1.0), cpus=2, gpus=0)
    assert err.value.exit_code == ExitCode.BAD_CONFIG


def test_generators_share_the_visible_gpus_by_fractions() -> None:
    plan = plan_pools(SSRSpec(generator_actors=4, actor_cpus=1.0), cpus=16, gpus=1)
    assert plan.gpus_per_generator == 0.25
    assert plan_pools(SSRSpec(generator_actors=2, actor_cpus=1), 16, 8).gpus_per_generator == 1
    with pytest.raises(WorkerError, match=r"config\.ssr\.gpusPerGenerator"):
        plan_pools(SSRSpec(generator_actors=3, gpus_per_generator=0.5), cpus=16, gpus=1)


def test_an_unknown_engine_is_refused_with_its_field_path() -> None:
    with pytest.raises(ValidationError, match=r"ssr\.engine"):
        FinetuneConfig.model_validate({"base": "file:///tmp/b", "ssr": {"engine": "spark"}})
    with pytest.raises(ValidationError, match=r"ssr\.actorCpus"):
        FinetuneConfig.model_validate({"base": "file:///tmp/b", "ssr": {"actorCpus": 0}})

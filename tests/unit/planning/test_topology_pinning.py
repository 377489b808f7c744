"""A placed gang is pinned: status records its domain, its pods' node affinity holds it there."""

from __future__ import annotations

from builders import make_job
from planning_fakes import T0, failed, running

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import Phase, TopologyPlacement, TrainingJob
from carina.platform.planning.actions import CreateWorkers, Wait
from carina.platform.planning.engine import JobAdmission, plan
from carina.platform.planning.render import RenderSettings, build_worker_pod
from carina.platform.planning.status import get_condition

SU = "carina.dev/scalable-unit"
HEALTH = {"key": "carina.dev/health", "operator": "NotIn", "values": ["WARN", "EVICT"]}
IN_SU3 = {"key": SU, "operator": "In", "values": ["su-3"]}
SU3 = TopologyPlacement(level=SU, domain="su-3")
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def job(mode: str | None = "Required", placement: TopologyPlacement | None = SU3, **spec):
    if mode is not None:
        spec["topology"] = {"level": SU, "mode": mode}
    manifest = make_job("llm").with_spec(
        replicas=2, cluster="blue-vela", resources={"gpus": 8, "cpu": "4"}, **spec
    )
    manifest["metadata"].update(namespace="ns", uid="u1", generation=1)
    if placement is not None:
        manifest["status"] = {"placement": placement.to_wire()}
    return TrainingJob.parse(manifest)


def node_affinity(job: TrainingJob) -> dict:
    return build_worker_pod(job, 0, 0, RenderSettings())["spec"]["affinity"]["nodeAffinity"]


# -- the pods --------------------------------------------------------------------------------


def test_a_required_domain_joins_the_health_rule_in_one_node_selector_term():
    affinity = node_affinity(job("Required"))
    [term] = affinity[REQUIRED]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [HEALTH, IN_SU3]  # both must hold
    assert PREFERRED not in affinity


def test_a_preferred_domain_is_a_preference_of_weight_100():
    affinity = node_affinity(job("Preferred"))
    assert affinity[REQUIRED]["nodeSelectorTerms"] == [{"matchExpressions": [HEALTH]}]
    assert affinity[PREFERRED] == [{"weight": 100, "preference": {"matchExpressions": [IN_SU3]}}]


def test_blue_velas_default_prefers_the_unit_placement_chose():
    affinity = node_affinity(job(mode=None))
    assert affinity[PREFERRED][0]["preference"]["matchExpressions"] == [IN_SU3]


def test_an_unplaced_gang_is_not_pinned():
    affinity = node_affinity(job("Required", placement=None))
    assert affinity[REQUIRED]["nodeSelectorTerms"] == [{"matchExpressions": [HEALTH]}]
    assert PREFERRED not in affinity


def test_a_domain_of_a_level_the_spec_no_longer_names_pins_nothing():
    rack = TopologyPlacement(level="carina.dev/rack", domain="r1")
    affinity = node_affinity(job("Required", placement=rack))
    assert affinity[REQUIRED]["nodeSelectorTerms"] == [{"matchExpressions": [HEALTH]}]


def test_the_users_node_affinity_keeps_the_domain_in_each_of_its_terms():
    user = {"key": "example.com/tier", "operator": "In", "values": ["gold"]}
    template = {
        "spec": {
            "affinity": {
                "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [user]}]}}
            }
        }
    }
    affinity = node_affinity(job("Required", template=template))
    [term] = affinity[REQUIRED]["nodeSelectorTerms"]
    assert user in term["matchExpressions"]
    assert IN_SU3 in term["matchExpressions"]


# -- the status --------------------------------------------------------------------------------


def test_workers_created_now_record_their_domain_in_status():
    decided = plan(job(placement=None), [], T0, placement=SU3)
    assert isinstance(decided.action, CreateWorkers)
    assert decided.status.placement == SU3


def test_a_restart_keeps_the_domain_until_the_new_workers_are_placed():
    restarting = plan(job(), [running(0), failed(1, code=1)], T0)
    assert restarting.status.placement == SU3


def test_a_gang_without_a_domain_waits_queued_and_says_why_in_a_warning():
    why = f"no {SU} has room for 2 workers x 8 GPUs; the most any has is 1 (su-0)"
    admission = JobAdmission(False, why, reason=Reason.NO_TOPOLOGY_DOMAIN)
    decided = plan(job(placement=None), [], T0, admission)
    assert isinstance(decided.action, Wait)
    assert decided.status.phase == Phase.QUEUED
    admitted = get_condition(decided.status, ConditionType.ADMITTED)
    assert (admitted.status, admitted.reason, admitted.message) == (
        "False",
        Reason.NO_TOPOLOGY_DOMAIN,
        why,
    )
    assert [(e.type, e.reason, e.message) for e in decided.events] == [
        ("Warning", Reason.NO_TOPOLOGY_DOMAIN, why)
    ]
    assert decided.status.placement is None


def test_a_gang_no_domain_could_ever_hold_waits_pending():
    admission = JobAdmission(
        False, "no unit can hold it", never_fits=True, reason=Reason.UNKNOWN_TOPOLOGY_LEVEL
    )
    decided = plan(job(placement=None), [], T0, admission)
    assert decided.status.phase == Phase.PENDING
    assert decided.events[0].type == "Warning"

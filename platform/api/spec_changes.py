"""What may change in a created TrainingJob's spec, and when.

One table (`SPEC_CHANGE_RULES`) says it; both halves are made from it: CEL transition rules
on the spec (`self` is the new spec, `oldSelf` the stored one), which the API server applies
to every update, and `refused_changes`, which the embedded store applies to its own.

A transition rule cannot read status, so "nothing runs" is what the user says: spec.suspend
true both before and after the change. Two kinds of field are fixed:

- the training itself (`workload`, `checkpoint.uri`): fixed once the job is created, like a
  Job's template. A job resumes from its own checkpoints, which belong to that training and
  that place; a different training is a new job (which may start from this one's checkpoint
  through a `job://` reference).
- how and where its workers run (`replicas`, `resources`, `cluster`, `image`, `template`,
  `topology`, `queue`): changeable while the job is suspended. A suspended job has no
  workers and gives its quota back; the next start renders them from the new spec.

Everything else (`suspend`, `ttlSecondsAfterFinished`, `activeDeadlineSeconds`, the
priority, the failure, preemption and preflight policies, `dependsOn`) may change at any
time and acts at the next reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carina.workloads.config import ApiModel, CelRule


@dataclass(frozen=True)
class SpecChangeRule:
    """A spec field that cannot change on a created job (unless it is suspended, if
    `while_suspended`)."""

    path: tuple[str, ...]  # wire names under spec
    while_suspended: bool

    @property
    def field(self) -> str:
        """The field path a refusal names: spec.<path>."""
        return "spec." + ".".join(self.path)

    @property
    def message(self) -> str:
        if self.while_suspended:
            return (
                f"{self.field} can change only while the job is suspended (spec.suspend true"
                " before and after the change); suspend it first, or delete and re-create it"
            )
        return (
            f"{self.field} is immutable once the job is created (it resumes from this"
            " training's checkpoints); delete and re-create it"
        )

    def cel(self) -> CelRule:
        """The API server's form, declared on the spec object."""
        same = _same(self.path)
        rule = f"(self.suspend && oldSelf.suspend) || {same}" if self.while_suspended else same
        return CelRule(rule, self.message, ".".join(self.path))

    def refuses(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """Whether changing spec `old` to `new` (wire form) breaks this rule."""
        if self.while_suspended and old.get("suspend") is True and new.get("suspend") is True:
            return False
        return bool(_at(old, self.path) != _at(new, self.path))


SPEC_CHANGE_RULES: tuple[SpecChangeRule, ...] = (
    SpecChangeRule(("workload",), while_suspended=False),
    SpecChangeRule(("checkpoint", "uri"), while_suspended=False),
    SpecChangeRule(("replicas",), while_suspended=True),
    SpecChangeRule(("resources",), while_suspended=True),
    SpecChangeRule(("cluster",), while_suspended=True),
    SpecChangeRule(("image",), while_suspended=True),
    SpecChangeRule(("template",), while_suspended=True),
    SpecChangeRule(("topology",), while_suspended=True),
    SpecChangeRule(("queue",), while_suspended=True),
)


class SpecChangeRefused(ValueError):
    """An update of a stored job's spec that the rules refuse; `errors` are (field, rule)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {rule}" for field, rule in errors))
        self.errors = errors


def refused_changes(old: ApiModel, new: ApiModel) -> list[tuple[str, str]]:
    """(field path, rule) for every change from spec `old` to spec `new` (TrainingJobSpecs)
    the rules refuse.

    Compared in wire form with the defaults filled in, as the API server compares them: a
    field left out and the same field set to its default are alike.
    """
    before, after = old.to_wire(), new.to_wire()
    return [(r.field, r.message) for r in SPEC_CHANGE_RULES if r.refuses(before, after)]


def _same(path: tuple[str, ...]) -> str:
    """CEL: the field at `path` is alike in self and oldSelf: absent from both, or present in
    both and equal (from the innermost field out, each level guarded by has())."""
    expression = ""
    for depth in range(len(path), 0, -1):
        at = ".".join(path[:depth])
        inner = expression or f"self.{at} == oldSelf.{at}"
        expression = f"(has(self.{at}) == has(oldSelf.{at}) && (!has(self.{at}) || {inner}))"
    return expression


def _at(spec: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = spec
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value

"""Generate Carina's CustomResourceDefinitions from the pydantic models.

One CRD per kind (`KINDS`: TrainingJob, ClusterQueue, LocalQueue, TrainingPriorityClass),
each written to `helm/carina/crds/<plural>.carina.dev.yaml` by `carina crds --output`.
The models are the source of truth; this module turns their JSON Schema into a
*structural* OpenAPI v3 schema the API server accepts: `$ref`s inlined, `anyOf` with
null folded into an optional field, int-or-string quantities marked as such (with the
bounds of both members: a quantity's pattern, an integer's minimum), defaults kept
(objects built by a default factory get that object as default, so nested defaults
apply), every model's `CEL_RULES` attached as `x-kubernetes-validations`, `x-kubernetes-*`
keywords a field declares (list types) kept, and free-form objects (`dict[str, Any]`, a
Kubernetes object passed through as written) marked to preserve unknown fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from carina.platform.api import queues
from carina.platform.api import types as api
from carina.workloads.config import ApiModel

# Keywords of JSON Schema that structural OpenAPI v3 schemas keep as they are.
_KEEP = {
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
    "default",
    "required",
    "nullable",
}

_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_ADMITTED = '.status.conditions[?(@.type=="Admitted")]'

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Workload", "type": "string", "jsonPath": ".status.workload"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.workers.ready"},
    {"name": "Workers", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    # A staged pretraining run's current stage, by name (index and count in status).
    {"name": "Stage", "type": "string", "jsonPath": ".status.progress.stage"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Queue", "type": "string", "jsonPath": ".spec.queue"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.queueing.reason"},
    # Why a job has no workers yet: WaitingForQuota, WaitingForUpstream, UpstreamMissing ...
    {"name": "Admitted", "type": "string", "jsonPath": _ADMITTED + ".reason"},
    _AGE,
    {"name": "Message", "type": "string", "jsonPath": _ADMITTED + ".message", "priority": 1},
]


@dataclass(frozen=True)
class CrdKind:
    """One kind's CRD: its top-level model, names, scope, subresources and columns."""

    model: type[ApiModel]
    plural: str
    singular: str
    short_names: tuple[str, ...] = ()
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"
    status_subresource: bool = True
    printer_columns: tuple[dict[str, Any], ...] = ()
    # property -> its description in the CRD, where the model's docstring says something else
    descriptions: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def name(self) -> str:
        """The CRD's own name: <plural>.<group>."""
        return f"{self.plural}.{api.GROUP}"

    @property
    def filename(self) -> str:
        """Its file under helm/carina/crds/."""
        return f"{self.name}.yaml"


TRAINING_JOB = CrdKind(
    model=api.TrainingJob,
    plural=api.PLURAL,
    singular=api.SINGULAR,
    short_names=api.SHORT_NAMES,
    printer_columns=tuple(PRINTER_COLUMNS),
    descriptions={"spec": "What a user asks for.", "status": "What the platform observed."},
)
CLUSTER_QUEUE = CrdKind(
    model=queues.ClusterQueue,
    plural="clusterqueues",
    singular="clusterqueue",
    short_names=("cq",),
    scope="Cluster",
    printer_columns=(
        {"name": "Cohort", "type": "string", "jsonPath": ".spec.cohort"},
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.queueingStrategy"},
        {
            "name": "GPUs reserved",
            "type": "number",
            "jsonPath": f'.status.resources[?(@.name=="{queues.GPU}")].reserved',
        },
        {"name": "Admitted", "type": "integer", "jsonPath": ".status.admittedJobs"},
        {"name": "Pending", "type": "integer", "jsonPath": ".status.pendingJobs"},
        _AGE,
    ),
    descriptions={
        "spec": "A team's quota and how its jobs queue for it.",
        "status": "What the admission writer reserved and what waits.",
    },
)
LOCAL_QUEUE = CrdKind(
    model=queues.LocalQueue,
    plural="localqueues",
    singular="localqueue",
    short_names=("lq",),
    printer_columns=(
        {"name": "ClusterQueue", "type": "string", "jsonPath": ".spec.clusterQueue"},
        {"name": "Pending", "type": "integer", "jsonPath": ".status.pendingJobs"},
        {"name": "Admitted", "type": "integer", "jsonPath": ".status.admittedJobs"},
    ),
    descriptions={
        "spec": "The ClusterQueue this namespace's jobs wait in.",
        "status": "This namespace's jobs in that ClusterQueue.",
    },
)
TRAINING_PRIORITY_CLASS = CrdKind(
    model=queues.TrainingPriorityClass,
    plural="trainingpriorityclasses",
    singular="trainingpriorityclass",
    short_names=("tpc",),
    scope="Cluster",
    status_subresource=False,
    printer_columns=(
        {"name": "Value", "type": "integer", "jsonPath": ".value"},
        {"name": "Description", "type": "string", "jsonPath": ".description"},
    ),
)

KINDS: tuple[CrdKind, ...] = (TRAINING_JOB, CLUSTER_QUEUE, LOCAL_QUEUE, TRAINING_PRIORITY_CLASS)
CRD_FILENAME = TRAINING_JOB.filename
CRD_FILENAMES = tuple(k.filename for k in KINDS)

# Properties every object has; the API server owns their schema.
_OBJECT_PROPERTIES: dict[str, dict[str, Any]] = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def _models_by_title(model: type[BaseModel], found: dict[str, type[ApiModel]]) -> None:
    """Collect every ApiModel model reachable from `model`, keyed by its JSON Schema title."""
    if issubclass(model, ApiModel):
        found[model.__name__] = model
    for field in model.model_fields.values():
        for arg in _type_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg.__name__ not in found:
                _models_by_title(arg, found)


def _type_args(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    out: list[Any] = []
    for arg in args:
        out.extend(_type_args(arg))
    return out


def _kubernetes_keywords(node: dict[str, Any]) -> dict[str, Any]:
    """The `x-kubernetes-*` keywords a field declares (`Field(json_schema_extra=...)`)."""
    return {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}


class _Converter:
    def __init__(self, defs: dict[str, Any], models: dict[str, type[ApiModel]]):
        self.defs = defs
        self.models = models

    def convert(self, node: dict[str, Any], model_name: str | None = None) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            out = self.convert(self.defs[name], model_name=name)
            for key in ("description", "default"):
                if key in node:
                    out[key] = node[key]
            return out

        any_of = node.get("anyOf")
        if any_of is not None:
            options = [o for o in any_of if o.get("type") != "null"]
            types = sorted(o.get("type", "") for o in options)
            if types == ["integer", "string"]:
                # Each member's bounds apply to values of its type only (a string's pattern,
                # an integer's minimum), so they sit side by side.
                out = {"x-kubernetes-int-or-string": True}
                for option in options:
                    out |= {k: v for k, v in option.items() if k in _KEEP and k != "type"}
            elif len(options) == 1:
                out = self.convert(options[0])
            else:
                raise ValueError(f"unsupported union in CRD schema: {any_of}")
            for key in ("description", "default"):
                if key in node and node[key] is not None:
                    out[key] = node[key]
            return out | _kubernetes_keywords(node)

        out = {k: v for k, v in node.items() if k in _KEEP} | _kubernetes_keywords(node)
        if "const" in node:
            out["enum"] = [node["const"]]
            out.setdefault("type", "string")
        if "exclusiveMinimum" in node:
            out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
        if "exclusiveMaximum" in node:
            out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True

        kind = node.get("type")
        if kind == "object" and "properties" in node:
            out["properties"] = {
                prop: self.convert(sub) for prop, sub in node["properties"].items()
            }
            model = self.models.get(model_name or node.get("title", ""))
            if model is not None:
                self._add_factory_defaults(model, out["properties"])
                rules = [
                    {"rule": r.rule, "message": r.message}
                    | ({"fieldPath": "." + r.field_path} if r.field_path else {})
                    for r in model.CEL_RULES
                ]
                if rules:
                    out["x-kubernetes-validations"] = rules
            if getattr(model, "model_config", {}).get("extra") == "allow":
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self.convert(node["additionalProperties"])
        elif kind == "object":
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif kind == "array":
            items = node.get("items")
            if items is None and "prefixItems" in node:
                # Fixed-length tuples (e.g. Adam betas) become bounded lists of one type.
                items = node["prefixItems"][0]
                out["minItems"] = out["maxItems"] = len(node["prefixItems"])
            out["items"] = self.convert(items or {})
        return out

    def _add_factory_defaults(self, model: type[ApiModel], props: dict[str, Any]) -> None:
        """Objects built by a default factory default to that object in the CRD too."""
        for name, field in model.model_fields.items():
            alias = field.alias or name
            if field.default_factory is None or alias not in props:
                continue
            value = field.get_default(call_default_factory=True)
            if isinstance(value, ApiModel):
                props[alias]["default"] = value.to_wire()
            elif isinstance(value, list):
                props[alias]["default"] = value


def openapi_schema(kind: CrdKind = TRAINING_JOB) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one kind (a TrainingJob's: spec and status)."""
    models: dict[str, type[ApiModel]] = {}
    _models_by_title(kind.model, models)
    schema = kind.model.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(schema.pop("$defs", {}), models)
    properties: dict[str, Any] = {}
    for prop, node in schema["properties"].items():
        if prop in _OBJECT_PROPERTIES:
            properties[prop] = dict(_OBJECT_PROPERTIES[prop])
            continue
        properties[prop] = converter.convert(node)
        if prop in kind.descriptions:
            properties[prop]["description"] = kind.descriptions[prop]
    out: dict[str, Any] = {
        "type": "object",
        "required": [p for p in schema.get("required", []) if p not in _OBJECT_PROPERTIES],
        "properties": properties,
    }
    rules = [
        {"rule": r.rule, "message": r.message}
        | ({"fieldPath": "." + r.field_path} if r.field_path else {})
        for r in kind.model.CEL_RULES
    ]
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def crd(kind: CrdKind = TRAINING_JOB) -> dict[str, Any]:
    """One kind's CustomResourceDefinition as a dict (the TrainingJob's by default)."""
    version: dict[str, Any] = {
        "name": api.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(kind)},
    }
    if kind.status_subresource:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = list(kind.printer_columns)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name},
        "spec": {
            "group": api.GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["carina"],
            },
            "versions": [version],
        },
    }


def crd_yaml(kind: CrdKind = TRAINING_JOB) -> str:
    """One CRD as the YAML committed under helm/carina/crds/."""
    header = f"# Generated by `carina crds` from {kind.model.__module__}; do not edit by hand.\n"
    text = yaml.dump(crd(kind), Dumper=_NoAliases, sort_keys=False, width=100, allow_unicode=True)
    return header + text


class _NoAliases(yaml.SafeDumper):
    """Write a schema shared by two fields (a Condition's) out twice, never as &anchor/*alias."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 (PyYAML's signature)
        return True


def crd_files() -> dict[str, str]:
    """filename -> YAML, for every kind: what `carina crds --output` writes."""
    return {kind.filename: crd_yaml(kind) for kind in KINDS}


def all_crds_yaml() -> str:
    """Every CRD in one multi-document YAML stream (`carina crds` without --output)."""
    return "---\n".join(crd_yaml(kind) for kind in KINDS)

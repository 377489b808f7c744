"""Generate the TrainingJob CustomResourceDefinition from the pydantic models.

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

from typing import Any

import yaml
from pydantic import BaseModel

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

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Workload", "type": "string", "jsonPath": ".status.workload"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.workers.ready"},
    {"name": "Workers", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


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
            value = field.default_factory()
            if isinstance(value, ApiModel):
                props[alias]["default"] = value.to_wire()
            elif isinstance(value, list):
                props[alias]["default"] = value


def openapi_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a TrainingJob (spec and status)."""
    models: dict[str, type[ApiModel]] = {}
    _models_by_title(api.TrainingJob, models)
    converter = _Converter({}, models)
    parts = {}
    for name, model in (("spec", api.TrainingJobSpec), ("status", api.TrainingJobStatus)):
        schema = model.model_json_schema(by_alias=True, mode="validation")
        converter.defs = schema.pop("$defs", {})
        parts[name] = converter.convert(schema, model_name=model.__name__)
    parts["spec"]["description"] = "What a user asks for."
    parts["status"]["description"] = "What the platform observed."
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": parts["spec"],
            "status": parts["status"],
        },
    }


def crd() -> dict[str, Any]:
    """The TrainingJob CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["carina"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML committed under helm/carina/crds/."""
    header = "# Generated by `carina crds` from carina.platform.api.types; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)


CRD_FILENAME = "trainingjobs.carina.dev.yaml"

"""Response bodies of the control plane other than the TrainingJob itself."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from carina.platform.api.types import TrainingJob


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class FieldErrorOut(Body):
    path: str = Field(description="dotted path into the manifest, camelCase")
    rule: str = Field(description="the rule it breaks")


class ErrorDetail(Body):
    reason: str = Field(description="NotFound, AlreadyExists, Invalid, Forbidden, ...")
    message: str
    errors: list[FieldErrorOut] = Field(default_factory=list)


class ErrorResponse(Body):
    detail: ErrorDetail


class ListMeta(Body):
    continue_: str | None = Field(
        None, alias="continue", description="pass as ?continue= for the next page"
    )


class JobList(Body):
    api_version: str = "carina.dev/v1alpha1"
    kind: str = "TrainingJobList"
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[TrainingJob]


class Point(Body):
    time: float = Field(description="seconds since the epoch")
    value: float


class MetricSeries(Body):
    source: str = Field(description="'prometheus', 'local' (the embedded store) or 'none'")
    step: list[Point] = Field(default_factory=list)
    loss: list[Point] = Field(default_factory=list)
    tokens_per_second: list[Point] = Field(default_factory=list)


class EventOut(Body):
    time: datetime
    type: str = Field(description="Normal or Warning")
    reason: str
    message: str


class EventList(Body):
    items: list[EventOut]


class Health(Body):
    status: str

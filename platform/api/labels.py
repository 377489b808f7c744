"""Kubernetes' rules for labels and annotations, as its API server checks object metadata.

A label key (and an annotation key) is a qualified name: an optional DNS-subdomain prefix and
a slash, then a name of at most 63 characters that begins and ends with a letter or digit. A
label value is empty or such a name without a prefix. Annotations may hold 256 KiB in all.
The models check them for `carina validate` and the REST API; the API server checks a
TrainingJob's own metadata itself, and a worker pod's when the operator creates it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_VALUE_PATTERN = rf"^({NAME_PART})?$"
PREFIX_MAX_LENGTH = 253
NAME_MAX_LENGTH = 63
ANNOTATIONS_MAX_BYTES = 256 * 1024  # Kubernetes' TotalAnnotationSizeLimitB

_NAME_PART = re.compile(NAME_PART)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN)


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a qualified name (None when it is), in Kubernetes' words."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix part must be non-empty"
    if "/" in prefix:
        return "a qualified name has at most one '/'"
    if prefix and (len(prefix) > PREFIX_MAX_LENGTH or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return (
            f"prefix part must be a lowercase DNS subdomain of at most {PREFIX_MAX_LENGTH}"
            " characters, e.g. example.com"
        )
    if not name:
        return "name part must be non-empty"
    if len(name) > NAME_MAX_LENGTH or not _NAME_PART.fullmatch(name):
        return (
            f"name part must be at most {NAME_MAX_LENGTH} characters of letters, digits, '-',"
            " '_' or '.', beginning and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a label value (None when it is)."""
    if value == "" or (len(value) <= NAME_MAX_LENGTH and _NAME_PART.fullmatch(value)):
        return None
    return (
        f"must be empty or at most {NAME_MAX_LENGTH} characters of letters, digits, '-', '_'"
        " or '.', beginning and ending with a letter or digit"
    )


def check_labels(labels: Any) -> Any:
    """Labels as they are, or ValueError naming the first key or value Kubernetes refuses."""
    if not isinstance(labels, Mapping):
        return labels  # the dict schema refuses it
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        problem = qualified_name_problem(key)
        if problem:
            raise ValueError(f"label key {key!r}: {problem}")
        problem = label_value_problem(value)
        if problem:
            raise ValueError(f"label {key!r} value {value!r}: {problem}")
    return labels


def check_annotations(annotations: Any) -> Any:
    """Annotations as they are, or ValueError naming a bad key or the size over the limit."""
    if not isinstance(annotations, Mapping):
        return annotations
    size = 0
    for key, value in annotations.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        # Kubernetes checks annotation keys in lower case: a prefix may have capitals.
        problem = qualified_name_problem(key.lower())
        if problem:
            raise ValueError(f"annotation key {key!r}: {problem}")
        size += len(key.encode()) + len(value.encode())
    if size > ANNOTATIONS_MAX_BYTES:
        raise ValueError(
            f"annotations hold {size} bytes; Kubernetes allows {ANNOTATIONS_MAX_BYTES} in all"
        )
    return annotations


# In a model: `dict[str, LabelValue]` and `check_labels` as a before-validator, so the error
# names the key and Kubernetes' rule and the value pattern reaches the JSON Schema (and CRD).
LabelValue = Annotated[str, Field(max_length=NAME_MAX_LENGTH, pattern=LABEL_VALUE_PATTERN)]

"""The filters of a history listing, checked: each refusal names the parameter and its rule.

`GET .../history?phase=&name=&since=&until=&labelSelector=k=v,k2=v2&limit=&continue=` reads
into a `HistoryQuery`; a `continue` token is the position after the last record of the
previous page (its end time and uid), so a page never repeats or skips a record while
records are added in front of it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime

from carina.platform.api.labels import label_value_problem, qualified_name_problem
from carina.platform.api.types import NAME_PATTERN, Phase

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SELECTOR_TERMS = 20

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class QueryError(ValueError):
    """A filter breaks its rule; `param` is the query parameter's name."""

    def __init__(self, param: str, rule: str) -> None:
        super().__init__(f"{param}: {rule}")
        self.param = param
        self.rule = rule


@dataclass(frozen=True)
class HistoryQuery:
    """What a listing asks for; times are seconds since the epoch."""

    phase: str | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    limit: int = DEFAULT_LIMIT
    after: tuple[float, str] | None = None  # (end time, uid) of the previous page's last


def parse_time(param: str, text: str) -> float:
    """An RFC 3339 time (`2026-05-01T12:00:00Z`, an offset instead of Z) in epoch seconds."""
    if not _RFC3339.match(text):
        raise QueryError(param, "must be an RFC 3339 time with a zone, e.g. 2026-05-01T12:00:00Z")
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise QueryError(param, "must be a real date and time (RFC 3339)") from None


def parse_label_selector(text: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key2=value2` (`==` too) as pairs; only equality is supported."""
    pairs: dict[str, str] = {}
    terms = [t.strip() for t in text.split(",")] if text.strip() else []
    if len(terms) > MAX_SELECTOR_TERMS:
        raise QueryError("labelSelector", f"at most {MAX_SELECTOR_TERMS} key=value terms")
    for term in terms:
        key, eq, value = term.partition("==") if "==" in term else term.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key.endswith("!"):
            raise QueryError(
                "labelSelector", f"{term!r}: must be key=value terms separated by commas"
            )
        problem = qualified_name_problem(key)
        if problem is not None:
            raise QueryError("labelSelector", f"key {key!r}: {problem}")
        problem = label_value_problem(value)
        if problem is not None:
            raise QueryError("labelSelector", f"value {value!r} of {key}: {problem}")
        if pairs.get(key, value) != value:
            raise QueryError("labelSelector", f"{key} is given two different values")
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def encode_continue(sort_time: float, uid: str) -> str:
    """The token that resumes a listing after the record (sort_time, uid)."""
    raw = json.dumps([sort_time, uid], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[float, str]:
    """The position a `continue` token stands for; QueryError when it is not one of ours."""
    rule = "must be the `continue` value of a previous page of this listing"
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error):
        raise QueryError("continue", rule) from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int | float)
        or not isinstance(value[1], str)
    ):
        raise QueryError("continue", rule)
    return float(value[0]), value[1]


def history_query(
    *,
    phase: str | None = None,
    name: str | None = None,
    since: str | None = None,
    until: str | None = None,
    label_selector: str | None = None,
    limit: int = DEFAULT_LIMIT,
    continue_: str | None = None,
) -> HistoryQuery:
    """The query the parameters describe; QueryError naming the first one that breaks a rule."""
    if phase:
        phases = [p.value for p in Phase]
        if phase not in phases:
            raise QueryError("phase", f"must be one of {', '.join(phases)}")
    if name and (len(name) > 63 or not re.fullmatch(NAME_PATTERN, name)):
        raise QueryError(
            "name",
            "must be a job name: lowercase letters, digits and '-', beginning and ending with a"
            " letter or digit",
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be between 1 and {MAX_LIMIT}")
    start = parse_time("since", since) if since else None
    end = parse_time("until", until) if until else None
    if start is not None and end is not None and end < start:
        raise QueryError("until", "must not be before since")
    return HistoryQuery(
        phase=phase or None,
        name=name or None,
        since=start,
        until=end,
        labels=parse_label_selector(label_selector) if label_selector else (),
        limit=limit,
        after=decode_continue(continue_) if continue_ else None,
    )

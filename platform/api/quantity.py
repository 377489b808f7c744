"""Kubernetes quantities (`4`, `500m`, `16Gi`, `1e3`): their grammar and their value.

The grammar is Kubernetes' own (k8s.io/apimachinery/pkg/api/resource):

    quantity ::= sign? number suffix?
    number   ::= digits | digits "." digits? | "." digits
    suffix   ::= Ki | Mi | Gi | Ti | Pi | Ei            (powers of 2)
               | n | u | m | k | M | G | T | P | E     (powers of 10)
               | ("e" | "E") sign? digits             (a decimal exponent)

The API models refuse a cpu or memory request that is not a quantity greater than zero
(`POSITIVE_QUANTITY_PATTERN`, which the CRD carries too); `parse_quantity` gives the value of
any quantity, as the embedded substrate counts them.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal

_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_SUFFIX = r"([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)"
QUANTITY_PATTERN = rf"^[+-]?{_NUMBER}{_SUFFIX}?$"
# No sign but an optional +, and a non-zero digit before or after the point.
POSITIVE_QUANTITY_PATTERN = (
    rf"^\+?([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*){_SUFFIX}?$"
)
# A quota may be zero: no sign but an optional +.
NON_NEGATIVE_QUANTITY_PATTERN = rf"^\+?{_NUMBER}{_SUFFIX}?$"
QUANTITY_MAX_LENGTH = 64

_QUANTITY = re.compile(r"^(?P<number>[+-]?[0-9.]+)(?P<suffix>.*)$")
_FACTORS = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{f"{p}i": Decimal(2 ** (10 * (i + 1))) for i, p in enumerate("KMGTPE")},
}
# Kubernetes rounds a non-zero quantity up to 1n and caps it at 2^63-1; an exponent beyond
# ±100 lands outside that range whatever the digits, so it is clamped before scaling.
_SMALLEST = Decimal("1e-9")
_LARGEST = Decimal(2**63 - 1)
_EXPONENT_LIMIT = 100
_CONTEXT = Context(prec=40)


def is_quantity(text: str) -> bool:
    """Whether `text` is a Kubernetes quantity (any sign)."""
    return re.fullmatch(QUANTITY_PATTERN, text) is not None


def parse_quantity(value: int | float | str) -> float:
    """A Kubernetes quantity (`2`, `500m`, `16Gi`, `1e3`) as a number; ValueError if malformed."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if not is_quantity(text):
        raise ValueError(f"not a quantity: {value!r}")
    match = _QUANTITY.match(text)
    assert match is not None
    number, suffix = Decimal(match["number"]), match["suffix"]
    if suffix in _FACTORS:
        number = _CONTEXT.multiply(number, _FACTORS[suffix])
    else:  # a decimal exponent, e3 or E-2
        exponent = max(-_EXPONENT_LIMIT, min(_EXPONENT_LIMIT, int(suffix[1:])))
        number = number.scaleb(exponent, _CONTEXT)
    if number:
        number = min(max(abs(number), _SMALLEST), _LARGEST).copy_sign(number)
    return float(number)

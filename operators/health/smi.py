"""What nvidia-smi says of each GPU: two queries a round, parsed into `Gpu`s (`GpuReading`).

`--query-gpu=<QUERY_FIELDS>` for identity, performance state, clock slowdowns, ECC counters
and the PCIe link; `--query-remapped-rows=<REMAP_FIELDS>` for HBM row remapping (A100 and later
replace failing memory rows with spares; a pending remap needs a GPU reset, a failed one means
the spares ran out). Both with `--format=csv,noheader,nounits`. Parsing is pure; `read_gpus`
is the one effect, run at most once a round (the light GPU checks and the probes share it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace

from carina.operators.health.checks import CommandOutput, Context

QUERY_FIELDS = (
    "index",
    "pci.bus_id",
    "name",
    "pstate",
    "clocks_throttle_reasons.hw_slowdown",
    "clocks_throttle_reasons.hw_thermal_slowdown",
    "clocks_throttle_reasons.sw_thermal_slowdown",
    "clocks_throttle_reasons.hw_power_brake_slowdown",
    "clocks.sm",
    "clocks.max.sm",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
)
REMAP_FIELDS = (
    "gpu_bus_id",
    "remapped_rows.correctable",
    "remapped_rows.uncorrectable",
    "remapped_rows.pending",
    "remapped_rows.failure",
)
# The throttle reasons (fields 4-7 above) that mean the hardware is in trouble, by short name.
SLOWDOWNS = ("hw-slowdown", "hw-thermal", "sw-thermal", "power-brake")

NVIDIA_SMI_TIMEOUT_S = 30.0


class SmiParseError(ValueError):
    """nvidia-smi printed something that is not the CSV asked for."""


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it (None: the field is not supported or not reported)."""

    index: int
    bus_id: str
    name: str
    pstate: str
    slowdowns: tuple[str, ...]  # active ones, from SLOWDOWNS
    sm_clock_mhz: float | None
    max_sm_clock_mhz: float | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    pcie_gen: int | None
    pcie_gen_max: int | None
    pcie_width: int | None
    pcie_width_max: int | None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    remapped_uncorrectable: int | None = None


def _rows(text: str, width: int) -> list[list[str]]:
    rows = [
        [cell.strip() for cell in row]
        for row in csv.reader(io.StringIO(text), skipinitialspace=True)
        if any(cell.strip() for cell in row)
    ]
    for row in rows:
        if len(row) != width:
            raise SmiParseError(f"expected {width} fields, got {len(row)}: {', '.join(row)}")
    return rows


def _missing(cell: str) -> bool:
    # "[N/A]", "[Not Supported]", "N/A", "[Unknown Error]" ...
    return cell.startswith("[") or cell in {"N/A", ""}


def _number(cell: str) -> float | None:
    if _missing(cell):
        return None
    try:
        return float(cell)
    except ValueError as exc:
        raise SmiParseError(f"not a number: {cell!r}") from exc


def _int(cell: str) -> int | None:
    value = _number(cell)
    return None if value is None else int(value)


def _flag(cell: str) -> bool | None:
    if _missing(cell):
        return None
    return cell.strip().lower() in {"active", "yes", "1", "true"}


def parse_gpus(text: str) -> list[Gpu]:
    """The GPUs of a `--query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits` answer."""
    gpus = []
    for row in _rows(text, len(QUERY_FIELDS)):
        index = _int(row[0])
        if index is None:
            raise SmiParseError(f"GPU without an index: {', '.join(row)}")
        active = tuple(name for name, cell in zip(SLOWDOWNS, row[4:8], strict=True) if _flag(cell))
        gpus.append(
            Gpu(
                index=index,
                bus_id=row[1],
                name=row[2],
                pstate=row[3],
                slowdowns=active,
                sm_clock_mhz=_number(row[8]),
                max_sm_clock_mhz=_number(row[9]),
                ecc_corrected=_int(row[10]),
                ecc_uncorrected=_int(row[11]),
                pcie_gen=_int(row[12]),
                pcie_gen_max=_int(row[13]),
                pcie_width=_int(row[14]),
                pcie_width_max=_int(row[15]),
            )
        )
    return gpus


def _bus_key(bus_id: str) -> str:
    # nvidia-smi writes PCI domains with 8 hex digits in one query and 4 in others.
    domain, _, rest = bus_id.strip().lower().rpartition(":")
    head = domain.split(":")
    head[0] = head[0][-4:].rjust(4, "0")
    return ":".join([*head, rest])


def with_remapped_rows(gpus: Sequence[Gpu], text: str) -> list[Gpu]:
    """The GPUs with the fields of a `--query-remapped-rows=<REMAP_FIELDS>` answer added."""
    by_bus = {_bus_key(row[0]): row for row in _rows(text, len(REMAP_FIELDS))}
    out = []
    for gpu in gpus:
        row = by_bus.get(_bus_key(gpu.bus_id))
        if row is None:
            out.append(gpu)
            continue
        out.append(
            replace(
                gpu,
                remapped_uncorrectable=_int(row[2]),
                remap_pending=_flag(row[3]),
                remap_failure=_flag(row[4]),
            )
        )
    return out


@dataclass(frozen=True)
class GpuReading:
    """The round's nvidia-smi reading: GPUs, or why there are none."""

    gpus: tuple[Gpu, ...] = ()
    absent: str | None = None  # no GPU tooling here at all: the GPU checks cannot run
    failure: str | None = None  # nvidia-smi is here but cannot read the GPUs
    remap_trouble: str | None = None  # the remapped-rows query failed on its own

    @property
    def product(self) -> str | None:
        return self.gpus[0].name if self.gpus else None


def reading_from(gpu_query: CommandOutput, remap_query: CommandOutput | None) -> GpuReading:
    """Judge the two commands' output into a reading (pure)."""
    if not gpu_query.found:
        return GpuReading(absent="no GPU tooling on this node (nvidia-smi not found)")
    if not gpu_query.ok:
        return GpuReading(failure=f"nvidia-smi failed ({gpu_query.trouble()})")
    try:
        gpus = parse_gpus(gpu_query.stdout)
    except SmiParseError as exc:
        return GpuReading(failure=f"nvidia-smi answered something unexpected: {exc}")
    if remap_query is None or not remap_query.ok:
        why = remap_query.trouble() if remap_query is not None else "not run"
        return GpuReading(tuple(gpus), remap_trouble=f"remapped-rows query failed ({why})")
    try:
        gpus = with_remapped_rows(gpus, remap_query.stdout)
    except SmiParseError as exc:
        return GpuReading(tuple(gpus), remap_trouble=f"remapped-rows answer unexpected: {exc}")
    return GpuReading(tuple(gpus))


def read_gpus(ctx: Context) -> GpuReading:
    """The round's reading (nvidia-smi runs at most once per query per round)."""
    cached = ctx.memo.get("gpus")
    if isinstance(cached, GpuReading):
        return cached
    gpu_query = ctx.run(
        [
            "nvidia-smi",
            f"--query-gpu={','.join(QUERY_FIELDS)}",
            "--format=csv,noheader,nounits",
        ],
        NVIDIA_SMI_TIMEOUT_S,
    )
    remap_query = None
    if gpu_query.ok:
        remap_query = ctx.run(
            [
                "nvidia-smi",
                f"--query-remapped-rows={','.join(REMAP_FIELDS)}",
                "--format=csv,noheader,nounits",
            ],
            NVIDIA_SMI_TIMEOUT_S,
        )
    reading = reading_from(gpu_query, remap_query)
    ctx.memo["gpus"] = reading
    return reading

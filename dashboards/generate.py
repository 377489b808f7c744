"""Write Carina's Grafana dashboards (dashboards/*.json) from the short descriptions below.

    python dashboards/generate.py          # rewrite the JSON files
    python dashboards/generate.py --check  # exit 1 if a committed file differs (a test runs this)

The JSON is what Grafana imports and what the chart ships (monitoring.grafanaDashboards); this
file is where a panel is added or changed. Each panel is a title, a unit and its PromQL, which
tests/integration/test_dashboards.py sends to a real Prometheus and whose metric names it checks
against what Carina's code exports (tests/metrics_catalog.py). Standard library only.

Grafana variables in expressions: $datasource, $namespace, $job (the TrainingJob; workers and
the operator label per-job series `job` and `namespace`) and Grafana's $__rate_interval.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24  # Grafana's grid is 24 columns wide
# Per-job series of the selected job (workers label them job, namespace, rank).
JOB = 'namespace="$namespace", job="$job"'


@dataclass
class Panel:
    """A time series (or stat) panel: title, unit, and (PromQL, legend) pairs."""

    title: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Text:
    """A Markdown panel (no query)."""

    title: str
    content: str
    width: int = 24
    height: int = 3


@dataclass
class Row:
    title: str


Item = Panel | Text | Row


def _variable_datasource() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
    }


def _variable_query(
    name: str, label: str, query: str, *, multi: bool, include_all: bool
) -> dict[str, Any]:
    """A variable filled from `label_values(<selector>, <label>)`."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,  # on time range change
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "current": {},
        "hide": 0,
    }


def _panel_json(item: Item, panel_id: int, x: int, y: int) -> dict[str, Any]:
    if isinstance(item, Row):
        return {
            "id": panel_id,
            "type": "row",
            "title": item.title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
            "panels": [],
        }
    if isinstance(item, Text):
        return {
            "id": panel_id,
            "type": "text",
            "title": item.title,
            "gridPos": {"h": item.height, "w": item.width, "x": x, "y": y},
            "options": {"mode": "markdown", "content": item.content},
        }
    custom: dict[str, Any] = {}
    if item.kind == "timeseries":
        custom = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if item.stack else 0,
            "showPoints": "never",
            "stacking": {"mode": "normal" if item.stack else "none", "group": "A"},
        }
    panel: dict[str, Any] = {
        "id": panel_id,
        "type": item.kind,
        "title": item.title,
        "description": item.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": item.height, "w": item.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": item.unit, "custom": custom}, "overrides": []},
        "options": item.options
        or (
            {
                "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
            if item.kind == "timeseries"
            else {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto",
            }
        ),
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + i),
                "range": True,
                "instant": False,
            }
            for i, (expr, legend) in enumerate(item.targets)
        ],
    }
    return panel


def dashboard(
    uid: str, title: str, description: str, items: list[Item], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    """A whole dashboard; panels flow left to right, wrapping at the grid's width."""
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, item in enumerate(items, start=1):
        width = WIDTH if isinstance(item, Row) else item.width
        height = 1 if isinstance(item, Row) else item.height
        if isinstance(item, Row) or x + width > WIDTH:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(item, panel_id, x, y))
        x, row_height = x + width, max(row_height, height)
        if isinstance(item, Row):
            x, y, row_height = 0, y + 1, 0
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["carina"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": [_variable_datasource(), *variables]},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Carina dashboards",
                "type": "dashboards",
                "tags": ["carina"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


# The platform's namespaces: every one with a TrainingJob the operator counts.
NAMESPACES = _variable_query(
    "namespace",
    "Namespace",
    "label_values(carina_jobs, namespace)",
    multi=True,
    include_all=True,
)
ONE_NAMESPACE = _variable_query(
    "namespace",
    "Namespace",
    "label_values(carina_worker_step, namespace)",
    multi=False,
    include_all=False,
)
JOBS = _variable_query(
    "job",
    "TrainingJob",
    'label_values(carina_worker_step{namespace="$namespace"}, job)',
    multi=False,
    include_all=False,
)


def _quantiles(metric: str, by: str = "", selector: str = "") -> list[tuple[str, str]]:
    """p50, p90 and p99 of a histogram, optionally per label `by`."""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{legend}p{int(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def platform() -> dict[str, Any]:
    """The whole platform: jobs, GPUs, start latency, restarts, throughput."""
    ns = 'namespace=~"$namespace"'
    # kube-state-metrics: allocatable GPUs and pod requests, joined to the node's pool label
    # (kube-state-metrics must allow it: --metric-labels-allowlist=nodes=[carina.dev/pool]).
    by_pool = "* on (node) group_left (label_carina_dev_pool) kube_node_labels"
    capacity = (
        'sum by (label_carina_dev_pool) (kube_node_status_allocatable{resource="nvidia_com_gpu"} '
        f"{by_pool})"
    )
    allocated = (
        "sum by (label_carina_dev_pool) ("
        '(kube_pod_container_resource_requests{resource="nvidia_com_gpu"} '
        '* on (namespace, pod) group_left () (kube_pod_status_phase{phase="Running"} == 1)) '
        f"{by_pool})"
    )
    items: list[Item] = [
        Row("Jobs"),
        Panel(
            "TrainingJobs by phase",
            [(f"sum by (phase) (carina_jobs{{{ns}}})", "{{phase}}")],
            stack=True,
            width=16,
            description="Jobs the operator sees, by status.phase.",
        ),
        Panel(
            "Running jobs",
            [(f'sum(carina_jobs{{{ns}, phase="Running"}})', "running")],
            kind="stat",
            width=8,
        ),
        Row("GPUs"),
        Panel(
            "GPUs allocated vs capacity, by pool",
            [
                (capacity, "{{label_carina_dev_pool}} capacity"),
                (allocated, "{{label_carina_dev_pool}} allocated"),
            ],
            width=16,
            description="Allocatable nvidia.com/gpu of each pool's nodes, and the GPUs "
            "requested by running pods on them (kube-state-metrics).",
        ),
        Panel(
            "GPU allocation, by pool",
            [(f"{allocated} / {capacity}", "{{label_carina_dev_pool}}")],
            unit="percentunit",
            kind="stat",
            width=8,
        ),
        Row("Starting and restarting"),
        Panel(
            "Apply-to-running latency",
            _quantiles("carina_job_start_seconds", selector=ns),
            unit="s",
            description="From a TrainingJob's creation to all its workers running.",
        ),
        Panel(
            "Restarts by reason (per hour)",
            [(f"sum by (reason) (increase(carina_job_restarts_total{{{ns}}}[1h]))", "{{reason}}")],
            stack=True,
            description="WorkerFailed is the training code's; NodeFailure and Evicted the "
            "infrastructure's; Preempted saved a checkpoint first.",
        ),
        Row("Throughput"),
        Panel(
            "Tokens per second, by job",
            [
                (
                    f"max by (namespace, job) (carina_worker_tokens_per_second{{{ns}}})",
                    "{{namespace}}/{{job}}",
                )
            ],
            stack=True,
        ),
        Panel(
            "MFU, by job",
            [(f"avg by (namespace, job) (carina_worker_mfu{{{ns}}})", "{{namespace}}/{{job}}")],
            unit="percentunit",
        ),
        Row("Queues"),
        Text(
            "Queue wait",
            "Queue wait by ClusterQueue appears here once admission (queues) lands in the "
            "operator; until then every job starts when it is created.",
        ),
    ]
    return dashboard(
        "carina-platform",
        "Carina / Platform",
        "TrainingJobs, GPUs by pool, start latency and restarts across the platform.",
        items,
        [NAMESPACES],
    )


def job() -> dict[str, Any]:
    """One TrainingJob: learning, throughput, stragglers, checkpoints, restarts."""
    per_rank = f"carina_worker_tokens_per_second{{{JOB}}}"
    items: list[Item] = [
        Row("Progress"),
        Panel("Step", [(f"max(carina_worker_step{{{JOB}}})", "step")], kind="stat", width=6),
        Panel(
            "Progress",
            [
                (
                    f"max(carina_worker_step{{{JOB}}}) / max(carina_worker_total_steps{{{JOB}}})",
                    "done",
                )
            ],
            unit="percentunit",
            kind="stat",
            width=6,
        ),
        Panel(
            "Last checkpoint step",
            [(f"max(carina_checkpoint_last_step{{{JOB}}})", "step")],
            kind="stat",
            width=6,
        ),
        Panel(
            "Restarts",
            [(f"sum(carina_job_restarts_total{{{JOB}}})", "restarts")],
            kind="stat",
            width=6,
        ),
        Row("Learning"),
        Panel(
            "Loss",
            [
                (f"max(carina_worker_loss{{{JOB}}})", "train"),
                (f"max(carina_worker_eval_loss{{{JOB}}})", "eval"),
            ],
        ),
        Panel("Learning rate", [(f"max(carina_worker_learning_rate{{{JOB}}})", "lr")]),
        Row("Throughput"),
        Panel(
            "Tokens per second",
            [
                (f"max({per_rank})", "tokens/s"),
                (
                    f'sum(rate(carina_worker_tokens_total{{{JOB}, rank="0"}}[$__rate_interval]))',
                    "tokens/s (counter)",
                ),
            ],
        ),
        Panel("MFU", [(f"avg(carina_worker_mfu{{{JOB}}})", "MFU")], unit="percentunit"),
        Panel(
            "Throughput by rank",
            [(per_rank, "rank {{rank}}")],
            description="Each rank's own measure of the job's tokens per second.",
        ),
        Panel(
            "Rank throughput vs the job's median",
            [
                (
                    f"{per_rank} / on (namespace, job) group_left () "
                    f"quantile by (namespace, job) (0.5, {per_rank})",
                    "rank {{rank}}",
                )
            ],
            unit="percentunit",
            description="Below 1: this rank saw slower steps than most; a straggler shows "
            "as a line that stays low.",
        ),
        Panel(
            "Compute seconds per step, by rank",
            [
                (f"max by (rank) (carina_worker_rank_step_seconds{{{JOB}}})", "rank {{rank}}"),
                (f"max(carina_worker_step_seconds{{{JOB}}})", "median step (rank 0)"),
            ],
            unit="s",
            description="Each rank's own compute time (before the gradient all-reduce), as "
            "rank 0 gathers it; a straggler is the line above the others. The operator names "
            "it in status.stragglers.",
        ),
        Panel(
            "Named stragglers",
            [(f"max by (rank, node) (carina_job_straggler{{{JOB}}})", "rank {{rank}} on {{node}}")],
            description="Ranks the operator named as outliers (1 while named).",
        ),
        Row("Checkpoints and restarts"),
        Panel(
            "Steps since the last checkpoint",
            [
                (
                    f"max(carina_worker_step{{{JOB}}}) - max(carina_checkpoint_last_step{{{JOB}}})",
                    "steps",
                )
            ],
        ),
        Panel(
            "Checkpoint save time",
            _quantiles("carina_checkpoint_save_seconds", selector=JOB),
            unit="s",
        ),
        Panel(
            "Restarts by reason",
            [(f"sum by (reason) (increase(carina_job_restarts_total{{{JOB}}}[1h]))", "{{reason}}")],
            stack=True,
            width=24,
        ),
    ]
    return dashboard(
        "carina-job",
        "Carina / TrainingJob",
        "One TrainingJob: loss, tokens/s, MFU, per-rank throughput, checkpoints and restarts.",
        items,
        [ONE_NAMESPACE, JOBS],
    )


def operator_and_control_plane() -> dict[str, Any]:
    """Carina's own components: operator reconciles, control plane requests."""
    api = "carina_api_requests_total"
    items: list[Item] = [
        Row("Operator"),
        Panel(
            "Operator replicas up", [('sum(up{job="carina-operator"})', "up")], kind="stat", width=6
        ),
        Panel(
            "Reconciles per second, by result",
            [
                (
                    "sum by (result) (rate(carina_reconcile_duration_seconds_count"
                    "[$__rate_interval]))",
                    "{{result}}",
                )
            ],
            unit="ops",
            width=9,
            stack=True,
        ),
        Panel(
            "Reconcile duration", _quantiles("carina_reconcile_duration_seconds"), unit="s", width=9
        ),
        Row("Control plane"),
        Panel(
            "Control plane replicas up",
            [('sum(up{job="carina-control-plane"})', "up")],
            kind="stat",
            width=6,
        ),
        Panel(
            "Requests per second, by route and code",
            [(f"sum by (route, code) (rate({api}[$__rate_interval]))", "{{route}} {{code}}")],
            unit="reqps",
            width=9,
            stack=True,
        ),
        Panel(
            "Error ratio (5xx)",
            [
                (
                    # `or vector(0)`: no 5xx at all is a ratio of 0, not an empty panel.
                    f'(sum(rate({api}{{code=~"5.."}}[$__rate_interval])) or vector(0)) / '
                    f"sum(rate({api}[$__rate_interval]))",
                    "5xx",
                )
            ],
            unit="percentunit",
            width=9,
        ),
        Panel(
            "Request duration, by route",
            _quantiles("carina_api_request_duration_seconds", by="route"),
            unit="s",
            width=24,
        ),
    ]
    return dashboard(
        "carina-components",
        "Carina / Operator and control plane",
        "Reconcile time of the operator; API latency and errors of the control plane.",
        items,
        [],
    )


QUEUES = _variable_query(
    "queue",
    "ClusterQueue",
    "label_values(carina_queue_admitted_jobs, cluster_queue)",
    multi=True,
    include_all=True,
)


def queues() -> dict[str, Any]:
    """Shared quota: who waits and why, what is held and borrowed, where GPU time went."""
    cq = 'cluster_queue=~"$queue"'
    gpus = f'{cq}, resource="nvidia.com/gpu"'
    items: list[Item] = [
        Row("Waiting"),
        Panel(
            "Pending jobs, by queue and reason",
            [
                (
                    f"sum by (cluster_queue, reason) (carina_queue_pending_jobs{{{cq}}})",
                    "{{cluster_queue}} {{reason}}",
                )
            ],
            stack=True,
            description="One reason per job, the first that holds in a fixed precedence"
            " (Misconfigured, ExceedsMaxQuota, WaitingForQuota, WaitingForPreemptedWorkloads,"
            " ...).",
        ),
        Panel(
            "Admitted jobs, by queue",
            [(f"sum by (cluster_queue) (carina_queue_admitted_jobs{{{cq}}})", "{{cluster_queue}}")],
            stack=True,
        ),
        Panel(
            "Time from creation to admission",
            _quantiles("carina_queue_admission_wait_seconds", by="cluster_queue", selector=cq),
            unit="s",
            width=24,
        ),
        Row("Quota"),
        Panel(
            "GPUs reserved, by queue",
            [
                (
                    f"sum by (cluster_queue) (carina_queue_reserved{{{gpus}}})",
                    "{{cluster_queue}}",
                )
            ],
            stack=True,
            description="Held by admitted jobs, and by preempted ones until their workers are"
            " gone.",
        ),
        Panel(
            "GPUs borrowed from the cohort, by queue",
            [
                (
                    f"sum by (cluster_queue) (carina_queue_borrowed{{{gpus}}})",
                    "{{cluster_queue}}",
                )
            ],
            stack=True,
        ),
        Panel(
            "Evictions per hour, by queue and reason",
            [
                (
                    "sum by (cluster_queue, reason)"
                    f" (increase(carina_queue_evictions_total{{{cq}}}[1h]))",
                    "{{cluster_queue}} {{reason}}",
                )
            ],
            width=24,
        ),
        Row("Where GPU time went"),
        Panel(
            "GPU-hours by account, by queue",
            [
                (
                    'sum by (queue, account) (carina_job_gpu_seconds{queue=~"$queue",'
                    ' account!="allocated"}) / 3600',
                    "{{queue}} {{account}}",
                )
            ],
            stack=True,
            width=16,
            description="Productive, and lost: work redone after failures and preemptions"
            " (since the last checkpoint), and GPUs held while a gang started or restarted.",
        ),
        Panel(
            "Goodput (productive / allocated)",
            [
                (
                    'sum(carina_job_gpu_seconds{queue=~"$queue", account="productive"}) /'
                    ' sum(carina_job_gpu_seconds{queue=~"$queue", account="allocated"})',
                    "goodput",
                )
            ],
            unit="percentunit",
            kind="stat",
            width=8,
        ),
    ]
    return dashboard(
        "carina-queues",
        "Carina / Queues",
        "ClusterQueues: pending jobs and why, quota held and borrowed, evictions, GPU time.",
        items,
        [QUEUES],
    )


def nodes() -> dict[str, Any]:
    """Node health: verdicts, failing checks, and what the operator did about them."""
    items: list[Item] = [
        Row("Verdicts"),
        Panel(
            "Nodes by verdict",
            [("sum by (state) (carina_node_health_state == 1)", "{{state}}")],
            stack=True,
            description="PASS, WARN (no new worker lands there) and EVICT (running gangs move "
            "off, the node is tainted until it passes again), from the health agents.",
        ),
        Panel(
            "Nodes not passing",
            [('max by (node, state) (carina_node_health_state{state!="PASS"} == 1)', "{{node}}")],
            description="One series per node that is WARN or EVICT now.",
        ),
        Row("Checks"),
        Panel(
            "Failing checks, by check",
            [
                (
                    "count by (check, result)"
                    ' (carina_node_health_check_result{result=~"WARN|EVICT"} == 1)',
                    "{{check}} {{result}}",
                )
            ],
            stack=True,
        ),
        Panel(
            "Checks that cannot run, by check",
            [
                (
                    'count by (check) (carina_node_health_check_result{result="UNSUPPORTED"} == 1)',
                    "{{check}}",
                )
            ],
            description="A check the node's hardware or image cannot run says so; it never "
            "counts as passed.",
        ),
        Panel(
            "Check duration",
            [("max by (check) (carina_node_health_check_seconds)", "{{check}}")],
            unit="s",
            width=24,
        ),
        Row("What it cost the jobs"),
        Panel(
            "Gangs moved off broken nodes per hour",
            [
                (
                    'sum by (namespace) (increase(carina_job_restarts_total{reason="NodeUnhealthy"}'
                    "[1h]))",
                    "{{namespace}}",
                )
            ],
            stack=True,
        ),
        Panel(
            "Stragglers named, by node",
            [("count by (node) (carina_job_straggler == 1)", "{{node}}")],
            stack=True,
            description="A node that keeps hosting stragglers is one to check "
            "(the operator asks its health agent for a full check).",
        ),
    ]
    return dashboard(
        "carina-nodes",
        "Carina / Node health",
        "The health agents' verdicts and checks, and the gangs moved and stragglers named.",
        items,
        [],
    )


DASHBOARDS = {
    "queues.json": queues,
    "nodes.json": nodes,
    "platform.json": platform,
    "job.json": job,
    "operator-and-control-plane.json": operator_and_control_plane,
}


def render(name: str) -> str:
    """The JSON text of one dashboard, as committed."""
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or --check) every dashboard."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--out", type=Path, default=HERE, help="folder (default: dashboards/)")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path, text = args.out / name, render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

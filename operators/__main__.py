"""Run the TrainingJob operator: `python -m carina.operators`.

Settings come from CARINA_OPERATOR_* environment variables (operators/runtime/settings.py); the
cluster from KUBECONFIG (or ~/.kube/config), else the pod's service account. Serves /metrics
and /healthz on CARINA_OPERATOR_PORT (8080). With CARINA_OPERATOR_PEERING set, replicas elect
the active one through kopf peering; otherwise it runs standalone.
"""

from __future__ import annotations

import logging
import sys

import kopf
from kubernetes import config

from carina.operators.runtime.kube import load_api_client
from carina.operators.runtime.settings import Settings, SettingsError
from carina.operators.trainingjob import handlers  # noqa: F401  (registers the handlers)


def main() -> None:
    """Run the operator until it is stopped; exit 1 at once when there is no cluster."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"carina operator: {exc}")
    try:
        load_api_client(settings.api_threads).close()
    except config.ConfigException as exc:
        # Without this check kopf would retry its startup every minute, printing tracebacks.
        sys.exit(f"carina operator: no cluster to talk to ({exc}); set KUBECONFIG or run in a pod")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kopf logs every handled event at INFO; its warnings and errors are what matter here.
    logging.getLogger("kopf").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        priority=settings.priority,
        memo=kopf.Memo(),
    )


if __name__ == "__main__":
    main()

"""Every Prometheus metric the control plane exports (labels: route, method, code)."""

from __future__ import annotations

API_REQUESTS = "carina_api_requests_total"  # counter: requests by route template and code
API_REQUEST_SECONDS = "carina_api_request_duration_seconds"  # histogram: by route template

ALL = (API_REQUESTS, API_REQUEST_SECONDS)

"""What any controller of the operator needs: the pod cache, the work queue, the Kubernetes
calls, the operator's metrics and settings. Knows no resource kind."""

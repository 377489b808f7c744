"""The node health agent (`carina health-agent`, a DaemonSet): checks a node, labels it.

`checks` (the plugin protocol), `host`, `gpu` and `probes` (the checks; `smi` reads
nvidia-smi), `faults` (drills), `verdict` (results to PASS/WARN/EVICT), `schedule` (idle node,
full run due), `node` (labels and condition on the Node), `metrics`, `agent` (the loop),
`__main__` (the command line). The vocabulary it writes is `carina.platform.api.health`.
"""

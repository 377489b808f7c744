"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, scheduler, KCM and kwok."""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from carina.testcluster.binaries import (
    REPO_ROOT,
    Binaries,
    ToolsMissing,
    find_binaries,
    kwok_stages_dir,
)
from carina.testcluster.pki import Pki, make_pki, write_kubeconfig
from carina.testcluster.pools import (
    DEFAULT_POOLS,
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_VALUE,
    SIMULATE_NOT_READY_LABEL,
    NodePool,
    pool_manifests,
)
from carina.testcluster.processes import Managed, Supervisor, free_port, wait_until

log = logging.getLogger(__name__)

DEFAULT_CRDS_DIR = REPO_ROOT / "helm" / "carina" / "crds"
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
# Every fake node reports this InternalIP (kwok --node-ip); nothing connects to it.
NODE_IP = "10.1.0.1"
START_TIMEOUT = 120.0
_WORKDIR_PREFIX = "carina-cluster-"
_OWNER_FILE = "owner.pid"


def _get_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when GET url answers 200; https without a context skips verification (see _insecure)."""
    if context is None and url.startswith("https:"):
        context = _insecure()
    with urllib.request.urlopen(url, context=context, timeout=5) as resp:
        return bool(resp.status == 200)


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike CalledProcessError, str() includes what kubectl printed."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or self.stdout or ''}".rstrip()


@dataclass(frozen=True)
class FakeNodeTuning:
    """How kwok plays the fake nodes; the defaults are a real kubelet's (and kwok's) own.

    Thousands of fake nodes on a small machine need other figures: kwok renews each node's
    Lease every `lease_seconds / 4` (a 10 s period for 2,000 nodes is 200 writes a second),
    and `parallelism` bounds how many pod and lease updates it has in flight; a renewal that
    comes later than `grace_seconds` makes the node lifecycle controller call the node
    NotReady, and its pods lost.
    """

    lease_seconds: int = 40
    grace_seconds: int | None = None  # kube-controller-manager's default (50 s)
    parallelism: int | None = None  # kwok's default (4)


class TestCluster:
    """Start the control plane and fake GPU pools; stop everything, newest first.

    Use as a context manager (`with TestCluster() as c: c.kubectl("get", "nodes")`) or call
    start() and stop(). Everything lives in a temporary folder and binds to loopback ports
    chosen at start; `kubeconfig` is an admin (system:masters) kubeconfig.
    """

    __test__ = False  # pytest: this is not a test class despite its name

    def __init__(
        self,
        pools: Sequence[NodePool] = DEFAULT_POOLS,
        crds_dir: Path | None = DEFAULT_CRDS_DIR,
        workdir: Path | None = None,
        keep_workdir: bool | None = None,
        fake_nodes: FakeNodeTuning | None = None,
    ) -> None:
        self.pools = tuple(pools)
        self.fake_nodes = fake_nodes or FakeNodeTuning()
        self.crds_dir = crds_dir
        self._own_workdir = workdir is None
        if workdir is None:
            _remove_orphaned_workdirs()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        # Who owns the folder: a later cluster removes it once this process is gone.
        (self.workdir / _OWNER_FILE).write_text(str(os.getpid()))
        self.keep_workdir = (
            keep_workdir
            if keep_workdir is not None
            else os.environ.get("CARINA_KEEP_CLUSTER_DIR") == "1"
        )
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.bins: Binaries | None = None
        self.pki: Pki | None = None
        self.server = ""
        self.etcd_url = ""
        self._supervisor = Supervisor(self.workdir / "logs")
        # Verifies the apiserver and presents the admin certificate (for direct HTTPS calls).
        self.ssl_context: ssl.SSLContext | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> TestCluster:
        """Start every component, wait until each is healthy, install CRDs, create the pools."""
        try:
            self.bins = find_binaries()
        except ToolsMissing:
            self.stop()  # removes the empty folder made in __init__
            raise
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self.pki = make_pki(self.workdir / "pki")
            self._start_etcd()
            self._start_apiserver()
            others = [self._start_scheduler(), self._start_controller_manager(), self._start_kwok()]
            for name, url, child in others:
                wait_until(partial(_get_ok, url), START_TIMEOUT, name, alive=child.check_alive)
            if self.crds_dir is not None:
                self.install_crds(self.crds_dir)
            self.create_pools(self.pools)
        except BaseException as e:
            if isinstance(e, Exception):  # not for Ctrl-C: the logs explain a failure, keep them
                log.error("test cluster failed to start; logs in %s", self.workdir / "logs")
                self.keep_workdir = True
            self.stop()
            raise
        log.info("test cluster ready: KUBECONFIG=%s", self.kubeconfig)
        return self

    def stop(self) -> None:
        """Stop all processes in reverse start order and remove the folder (unless kept)."""
        self._supervisor.stop_all()
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.workdir.exists():
            (self.workdir / _OWNER_FILE).unlink(missing_ok=True)  # kept: never swept

    def check_alive(self) -> None:
        """Raise ProcessDied if any component has exited."""
        for child in self._supervisor.children:
            child.check_alive()

    @property
    def components(self) -> list[Managed]:
        """The running processes, in start order."""
        return list(self._supervisor.children)

    # -- components ------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        assert self.bins
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        child = self._supervisor.start(
            "etcd",
            [
                self.bins.etcd,
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Test data is thrown away: skip fsync, the slowest part of etcd on a shared disk.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self.etcd_url = client_url
        wait_until(
            lambda: _get_ok(f"{client_url}/health"), START_TIMEOUT, "etcd", alive=child.check_alive
        )

    def _start_apiserver(self) -> None:
        assert self.bins
        assert self.pki
        pki, port = self.pki, free_port()
        self.server = f"https://127.0.0.1:{port}"
        write_kubeconfig(pki, self.server, self.kubeconfig)
        child = self._supervisor.start(
            "kube-apiserver",
            [
                self.bins.kube_apiserver,
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                # Without it the apiserver looks for a default route to pick an address and fails
                # on hosts that have none.
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={pki.apiserver_crt}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_crt}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                # The `kubernetes` Service would point at 127.0.0.1, which Endpoints validation
                # refuses (a log line every 10 s); nothing here runs in-cluster to need it.
                "--endpoint-reconciler-type=none",
                # As kwokctl does: no request throttling, so a loaded 2-core machine queues
                # nothing behind priority levels (throttling is not what our tests test).
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
        ctx.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
        self.ssl_context = ctx
        wait_until(
            lambda: _get_ok(f"{self.server}/readyz", ctx),
            START_TIMEOUT,
            "kube-apiserver /readyz",
            alive=child.check_alive,
        )

    def _component_flags(self, name: str, port: int) -> list[str]:
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            # Client rate limits as kwokctl's --disable-qps-limits sets them: the defaults
            # (scheduler 50/s, controller manager 20/s) slow tests that create many pods.
            "--kube-api-qps=1000",
            "--kube-api-burst=1000",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / name}",
        ]

    def _start_scheduler(self) -> tuple[str, str, Managed]:
        assert self.bins
        port = free_port()
        child = self._supervisor.start(
            "kube-scheduler",
            [
                self.bins.kube_scheduler,
                *self._component_flags("kube-scheduler", port),
            ],
        )
        return "kube-scheduler", f"https://127.0.0.1:{port}/healthz", child

    def _start_controller_manager(self) -> tuple[str, str, Managed]:
        assert self.bins
        assert self.pki
        port = free_port()
        child = self._supervisor.start(
            "kube-controller-manager",
            [
                self.bins.kube_controller_manager,
                *self._component_flags("kube-controller-manager", port),
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_crt}",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                *(
                    [f"--node-monitor-grace-period={self.fake_nodes.grace_seconds}s"]
                    if self.fake_nodes.grace_seconds is not None
                    else []
                ),
            ],
        )
        return "kube-controller-manager", f"https://127.0.0.1:{port}/healthz", child

    def _start_kwok(self) -> tuple[str, str, Managed]:
        assert self.bins
        # kwok v0.8 standalone needs its stages given explicitly (only kwokctl injects defaults).
        stages = sorted(kwok_stages_dir().glob("*.yaml"))
        if not stages:
            raise FileNotFoundError(f"no kwok stages in {kwok_stages_dir()}")
        config = self.workdir / "kwok-stages.yaml"
        documents = [p.read_text() for p in stages]
        if (n := self.fake_nodes.parallelism) is not None:
            documents.append(
                "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\n"
                f"options:\n  podPlayStageParallelism: {n}\n  nodePlayStageParallelism: {n}\n"
                f"  nodeLeaseParallelism: {n}\n"
            )
        config.write_text("\n---\n".join(documents))
        port = free_port()
        child = self._supervisor.start(
            "kwok",
            [
                self.bins.kwok,
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP}",
                f"--node-lease-duration-seconds={self.fake_nodes.lease_seconds}",
                f"--server-address=127.0.0.1:{port}",
            ],
        )
        return "kwok", f"http://127.0.0.1:{port}/healthz", child

    # -- using the cluster -----------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point kubectl and client libraries at this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl against the cluster; raises KubectlError (with stderr) on failure."""
        assert self.bins, "cluster not started"
        result = subprocess.run(
            [str(self.bins.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def get_json(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, objects: Iterable[dict[str, Any]], *, server_side: bool = True) -> None:
        """Apply manifests given as dicts (server-side apply by default)."""
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        extra = ["--server-side", "--field-manager=carina-testcluster"] if server_side else []
        self.kubectl("apply", *extra, "-f", "-", input=doc)

    def install_crds(self, crds_dir: Path) -> list[Path]:
        """Apply every *.yaml under crds_dir (if any) and wait until they are Established."""
        files = sorted(crds_dir.glob("*.yaml")) if crds_dir.is_dir() else []
        if not files:
            return []
        names: list[str] = []
        for f in files:
            out = self.kubectl(
                "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(f)
            ).stdout
            names += out.split()
        # Polled here rather than `kubectl wait --for=condition=Established`: kubectl 1.36
        # errors out ("accessor error: <nil>") on a CRD whose status has no conditions yet.
        for name in names:
            wait_until(partial(self._established, name), 60, f"{name} to be Established")
        log.info("installed CRDs from %s", crds_dir)
        return files

    def _established(self, name: str) -> bool:
        crd = self.get_json(name)
        conditions = crd.get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    def create_pools(self, pools: Sequence[NodePool], timeout: float = 60) -> list[str]:
        """Create the pools' fake nodes and wait until kwok reports them Ready."""
        nodes = pool_manifests(list(pools))
        if not nodes:
            return []
        # create, not apply: the Node's status is only taken from the object on create.
        self.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        names = [n["metadata"]["name"] for n in nodes]
        # Polled, not `kubectl wait`: see install_crds (a new Node has no conditions yet).
        wait_until(partial(self._all_ready, set(names)), timeout, f"nodes {names} to be Ready")
        log.info("created %d fake nodes: %s", len(names), " ".join(names))
        return names

    def _all_ready(self, names: set[str]) -> bool:
        ready = {
            n["metadata"]["name"]
            for n in self.get_json("nodes")["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions") or []
            )
        }
        return names <= ready

    def set_node_ready(self, node: str, ready: bool) -> None:
        """Make a fake node report Ready=False (kwok stage), or Ready again."""
        label = f"{SIMULATE_NOT_READY_LABEL}-" if ready else f"{SIMULATE_NOT_READY_LABEL}=true"
        self.kubectl("label", "node", node, label, "--overwrite")


def _remove_orphaned_workdirs() -> None:
    """Delete folders of clusters whose process died without cleaning up (SIGKILL, SIGTERM
    without a handler); their servers died with it (parent-death signal), the files did not."""
    for d in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            pid = int((d / _OWNER_FILE).read_text())
            os.kill(pid, 0)  # raises ProcessLookupError once the owner is gone
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            continue  # no owner file (kept, or older): leave it alone


def _insecure() -> ssl.SSLContext:
    """For components' /healthz: they serve a self-signed cert from --cert-dir."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

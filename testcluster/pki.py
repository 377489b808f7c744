"""Certificates and keys for the test control plane, made with the openssl CLI (no Python deps)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Ten years: a long-lived `make cluster` must never see its certificates expire.
_DAYS = "3650"


@dataclass(frozen=True)
class Pki:
    """Paths of everything the control plane needs; one CA signs the serving and client certs."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        """Service-account token signing key (kube-apiserver and kube-controller-manager)."""
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """Service-account token verification key."""
        return self.dir / "sa.pub"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _sign(pki: Pki, name: str, subject: str, extensions: str) -> None:
    """Make <name>.key and <name>.crt signed by the CA with the given v3 extensions."""
    d = pki.dir
    ext = d / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        _DAYS,
        "-extfile",
        ext.name,
        "-out",
        f"{name}.crt",
        cwd=d,
    )


def make_pki(directory: Path) -> Pki:
    """Create a CA, the apiserver's serving cert, an admin client cert and the SA key pair."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed (Debian package: openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        _DAYS,
        "-subj",
        "/CN=carina-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=directory,
    )
    # 10.0.0.1 is the `kubernetes` Service's ClusterIP in --service-cluster-ip-range=10.0.0.0/24.
    _sign(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n",
    )
    # O= becomes the user's group: system:masters is bound to cluster-admin by RBAC bootstrap.
    _sign(pki, "admin", "/O=system:masters/CN=admin", "extendedKeyUsage=clientAuth\n")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(pki: Pki, server: str, path: Path, name: str = "carina-test") -> Path:
    """Write an admin kubeconfig with the CA and client certificate embedded."""
    # Plain text rather than a YAML library: the launcher stays stdlib-only.
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {_b64(pki.ca_crt)}
users:
- name: {name}-admin
  user:
    client-certificate-data: {_b64(pki.admin_crt)}
    client-key-data: {_b64(pki.admin_key)}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-admin
current-context: {name}
"""
    )
    path.chmod(0o600)
    return path

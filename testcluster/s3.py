"""A real S3-compatible object store (MinIO, built from Go modules by tools/build.sh)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from carina.testcluster.binaries import tool_binary
from carina.testcluster.processes import Supervisor, free_port, wait_until

START_TIMEOUT = 60.0
REGION = "us-east-1"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_headers(
    method: str, host: str, path: str, access_key: str, secret_key: str, region: str = REGION
) -> dict[str, str]:
    """AWS Signature V4 headers for a body-less request (enough to create a bucket)."""
    now = dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    names = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join(
        [
            method,
            path,
            "",
            f"host:{host}",
            f"x-amz-content-sha256:{payload}",
            f"x-amz-date:{amz_date}",
            "",
            names,
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}",
    }


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on an S3 server and everything a client needs to reach it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """AWS SDK environment variables for a subprocess (a worker, the operator)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (boto3 is imported only here)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


class S3Server:
    """MinIO in single-drive mode on a free loopback port, with fixed test credentials."""

    access_key = "carina-test"
    secret_key = "carina-test-secret"  # MinIO wants at least 8 characters
    region = REGION

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="carina-s3-"))
        self.endpoint_url = ""
        self._supervisor = Supervisor(self.workdir)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> S3Server:
        """Start MinIO and wait until it is ready."""
        binary = tool_binary("minio", "minio")
        port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        child = self._supervisor.start(
            "minio",
            [
                binary,
                "server",
                "--quiet",
                "--address",
                f"127.0.0.1:{port}",
                "--console-address",
                f"127.0.0.1:{free_port()}",
                self.workdir / "data",
            ],
            env={
                "MINIO_ROOT_USER": self.access_key,
                "MINIO_ROOT_PASSWORD": self.secret_key,
                "MINIO_REGION": self.region,
                # No web console and no phoning home for updates: nothing leaves loopback.
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "MINIO_CI_CD": "1",
            },
        )
        try:
            wait_until(self._ready, START_TIMEOUT, "minio", alive=child.check_alive)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop MinIO and remove its data."""
        self._supervisor.stop_all()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint_url}/minio/health/ready", timeout=5) as r:
            return bool(r.status == 200)

    @property
    def env(self) -> dict[str, str]:
        """AWS SDK environment variables (boto3 reads AWS_ENDPOINT_URL since 1.28)."""
        return self.bucket("").env

    def bucket(self, name: str) -> S3Bucket:
        """Connection details for bucket `name` on this server (see create_bucket)."""
        return S3Bucket(self.endpoint_url, self.access_key, self.secret_key, self.region, name)

    def create_bucket(self, name: str) -> S3Bucket:
        """Create bucket `name` (no SDK needed)."""
        host = self.endpoint_url.removeprefix("http://")
        request = urllib.request.Request(
            f"{self.endpoint_url}/{name}",
            method="PUT",
            headers=signed_headers(
                "PUT", host, f"/{name}", self.access_key, self.secret_key, self.region
            ),
        )
        with urllib.request.urlopen(request, timeout=30):
            pass
        return self.bucket(name)

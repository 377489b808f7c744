"""Where checkpoints live: a local directory (file://, absolute path, pvc://) or S3 (s3://).

A store holds files under keys like `step-00000010/model.safetensors`. Writes go through a
local file so large tensors stream to disk or to a multipart upload instead of memory.
Storage errors are `WorkerError(TRANSIENT)`: the next attempt may well succeed. A file that
is not there is `FileNotFoundError` from either store: a retry will not bring it back.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from carina.workloads import contract
from carina.workloads.config import ExitCode
from carina.workloads.errors import WorkerError

S3_ENDPOINT_ENVS = ("CARINA_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class Store(Protocol):
    """A flat key space of files with a notion of top-level directories."""

    uri: str

    def put_file(self, local: Path, key: str) -> None: ...

    def put_bytes(self, data: bytes, key: str) -> None: ...

    def get_file(self, key: str, dest_dir: Path) -> Path: ...

    def get_bytes(self, key: str) -> bytes | None: ...

    def get_dir(self, prefix: str, names: list[str], dest_dir: Path) -> Path: ...

    def list_dirs(self) -> list[str]: ...

    def delete_dir(self, name: str) -> None: ...


class LocalStore:
    """A directory; each file appears by an atomic rename, so readers never see half a file."""

    def __init__(self, root: Path, uri: str) -> None:
        self.root = root
        self.uri = uri

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_file(self, local: Path, key: str) -> None:
        """Move or copy `local` to `key` atomically."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)

    def put_bytes(self, data: bytes, key: str) -> None:
        """Write `data` to `key` atomically (fsynced: a manifest must not outrun its data)."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)

    def get_file(self, key: str, dest_dir: Path) -> Path:  # noqa: ARG002 (the Store protocol)
        """The local path of `key` (no copy needed)."""
        return self._path(key)

    def get_bytes(self, key: str) -> bytes | None:
        """Contents of `key`, or None when it does not exist."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def get_dir(self, prefix: str, names: list[str], dest_dir: Path) -> Path:  # noqa: ARG002
        """The local directory holding the files `names` under `prefix` (no copy needed)."""
        return self._path(prefix)

    def list_dirs(self) -> list[str]:
        """Names of the top-level directories."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def delete_dir(self, name: str) -> None:
        """Remove a top-level directory and everything in it."""
        shutil.rmtree(self._path(name), ignore_errors=True)


class S3Store:
    """A bucket prefix through boto3 (endpoint from CARINA_S3_ENDPOINT / AWS_ENDPOINT_URL)."""

    def __init__(self, bucket: str, prefix: str, uri: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = uri
        self.client = client or s3_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, local: Path, key: str) -> None:
        """Upload `local` (multipart when large); S3 makes an object visible only when whole."""
        with _transient("upload", key):
            self.client.upload_file(str(local), self.bucket, self._key(key))

    def put_bytes(self, data: bytes, key: str) -> None:
        """Upload a small object."""
        with _transient("upload", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, dest_dir: Path) -> Path:
        """Download `key` into `dest_dir` and return the local path (FileNotFoundError: none)."""
        dest = dest_dir / key.replace("/", "__")
        with _transient("download", key):
            self.client.download_file(self.bucket, self._key(key), str(dest))
        return dest

    def get_bytes(self, key: str) -> bytes | None:
        """Contents of `key`, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(obj["Body"].read())
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise WorkerError(ExitCode.TRANSIENT, f"s3 download {key}: {e}") from e
        except Exception as e:
            raise WorkerError(ExitCode.TRANSIENT, f"s3 download {key}: {e}") from e

    def get_dir(self, prefix: str, names: list[str], dest_dir: Path) -> Path:
        """Download the files `names` under `prefix` into one local directory; return it.

        A missing file raises FileNotFoundError, as it does when read from a local store.
        """
        local = dest_dir / prefix
        local.mkdir(parents=True, exist_ok=True)
        for name in names:
            key = f"{prefix}/{name}"
            with _transient("download", key):
                self.client.download_file(self.bucket, self._key(key), str(local / name))
        return local

    def list_dirs(self) -> list[str]:
        """Names of the 'directories' (common prefixes) right under the prefix."""
        base = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        with _transient("list", base):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    names.append(cp["Prefix"][len(base) :].rstrip("/"))
        return sorted(names)

    def delete_dir(self, name: str) -> None:
        """Delete every object under `name/`."""
        with _transient("delete", name):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(name) + "/"):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})


class _transient:
    """Turn a storage failure into WorkerError(TRANSIENT) with what was being done."""

    def __init__(self, action: str, key: str) -> None:
        self.action, self.key = action, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.action == "download" and (isinstance(exc, FileNotFoundError) or _not_found(exc)):
            # Not a storage failure: the object is not there, and a retry will not change it.
            raise FileNotFoundError(errno.ENOENT, "no such object", self.key) from exc
        if isinstance(exc, Exception) and not isinstance(exc, WorkerError):
            raise WorkerError(ExitCode.TRANSIENT, f"s3 {self.action} {self.key}: {exc}") from exc


def _not_found(exc: Any) -> bool:
    """True for botocore's answer to a missing object (a download's HEAD says 404)."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404")


def s3_client() -> Any:
    """A boto3 S3 client; credentials come from the usual AWS environment variables."""
    import boto3
    from botocore.config import Config

    endpoint = next((os.environ[e] for e in S3_ENDPOINT_ENVS if os.environ.get(e)), None)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
        ),
    )


def local_path(uri: str) -> Path | None:
    """The contract's `local_path`, a bad scheme being the worker's BAD_CONFIG."""
    try:
        return contract.local_path(uri)
    except contract.ContractError as exc:
        raise WorkerError(ExitCode.BAD_CONFIG, str(exc)) from exc


def open_store(uri: str) -> Store:
    """The store a checkpoint URI names."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path, uri)
    path = local_path(uri)
    assert path is not None
    return LocalStore(path, uri)


def scratch_dir() -> Path:
    """A fresh local directory for staging files."""
    return Path(tempfile.mkdtemp(prefix="carina-ckpt-"))

"""A sweep's report under an s3:// checkpoint URI, read by the control plane from a real
S3-compatible server (MinIO): no Ray, no worker, only the store."""

from __future__ import annotations

import json
import re

import pytest

from carina.platform.controlplane.backend_errors import NotFound
from carina.platform.controlplane.routers.sweeps import read_s3
from carina.testcluster import S3Bucket

pytestmark = pytest.mark.s3


def test_the_report_is_read_from_the_store_and_a_missing_one_is_none(
    s3: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    report = {"fit": {"a": 4.6, "b": -0.51}, "best": [{"batch": 16, "tokens": 100000}]}
    s3.client().put_object(
        Bucket=s3.bucket, Key="lr-sweep/sweep/report.json", Body=json.dumps(report).encode()
    )
    got = read_s3(f"s3://{s3.bucket}/lr-sweep/sweep/report.json")
    assert got is not None
    assert json.loads(got) == report
    assert read_s3(f"s3://{s3.bucket}/lr-sweep/sweep/report.md") is None


def test_a_bucket_the_store_does_not_have_is_named_in_the_error(
    s3: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(NotFound, match=re.escape("s3://no-such-bucket-here/x/sweep/report.json")):
        read_s3("s3://no-such-bucket-here/x/sweep/report.json")

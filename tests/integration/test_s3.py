"""A real S3-compatible server (MinIO) stores what boto3 puts."""

from __future__ import annotations

import pytest

from carina.testcluster import S3Bucket

pytestmark = pytest.mark.s3


def test_object_put_with_boto3_reads_back(s3: S3Bucket) -> None:
    client = s3.client()
    body = b"step=42\n" * 1000
    client.put_object(Bucket=s3.bucket, Key="ckpt/job/step-42/meta.txt", Body=body)
    got = client.get_object(Bucket=s3.bucket, Key="ckpt/job/step-42/meta.txt")["Body"].read()
    assert got == body
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix="ckpt/job/")
    assert [o["Key"] for o in listed["Contents"]] == ["ckpt/job/step-42/meta.txt"]

"""S3-compatible object storage: the only place boto3 is touched.

Failures become TtsError codes: a missing object is the request's fault (permanent), an
unreachable endpoint is ours (retriable, STORAGE_ERROR). Messages name bucket/key, never credentials.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from processor.config import S3Settings
from processor.errors import ErrorCode, TtsError
from processor.request import S3Location

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def s3_client(settings: S3Settings, *, connect_timeout: float = 5.0, read_timeout: float = 30.0) -> S3Client:
    kwargs: dict[str, Any] = {
        "region_name": settings.region,
        "config": Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # One quick retry inside boto; the pipeline owns the longer, observable backoff.
            retries={"max_attempts": 2, "mode": "standard"},
            signature_version="s3v4",
        ),
        "verify": settings.ca_bundle or settings.verify_tls,
    }
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        kwargs["aws_access_key_id"] = settings.access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.secret_access_key.get_secret_value()
    client: S3Client = boto3.session.Session().client("s3", **kwargs)
    return client


class Storage:
    def __init__(self, settings: S3Settings, client: S3Client | None = None) -> None:
        self.settings = settings
        self.client = client or s3_client(settings)

    def put(self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=metadata)
        except ClientError as exc:
            code = _code(exc)
            if code in {"NoSuchBucket", "AccessDenied"}:
                raise TtsError(ErrorCode.STORAGE_ERROR, f"cannot write s3://{bucket}/{key}: {code}",
                               retriable=False) from None
            raise TtsError(ErrorCode.STORAGE_ERROR, f"writing s3://{bucket}/{key} failed: {code}") from None
        except BotoCoreError as exc:
            raise TtsError(ErrorCode.STORAGE_ERROR, f"storage unreachable: {type(exc).__name__}") from None

    def get_capped(self, bucket: str, key: str, max_bytes: int) -> tuple[bytes, str]:
        """Object bytes and ETag; refuses objects over ``max_bytes`` before downloading them."""
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] > max_bytes:
                raise TtsError(ErrorCode.REFERENCE_TOO_LARGE,
                               f"s3://{bucket}/{key} is {head['ContentLength']} bytes; the limit is {max_bytes}")
            obj = self.client.get_object(Bucket=bucket, Key=key)
            data = obj["Body"].read(max_bytes + 1)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise TtsError(ErrorCode.REFERENCE_NOT_FOUND, f"s3://{bucket}/{key} does not exist") from None
            raise TtsError(ErrorCode.STORAGE_ERROR, f"reading s3://{bucket}/{key} failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise TtsError(ErrorCode.STORAGE_ERROR, f"storage unreachable: {type(exc).__name__}") from None
        if len(data) > max_bytes:
            raise TtsError(ErrorCode.REFERENCE_TOO_LARGE, f"s3://{bucket}/{key} exceeds {max_bytes} bytes")
        return data, str(obj.get("ETag", ""))

    def etag(self, bucket: str, key: str) -> str | None:
        """The object's ETag, or None if it does not exist (cheap check before a cached download)."""
        try:
            return str(self.client.head_object(Bucket=bucket, Key=key).get("ETag", ""))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise TtsError(ErrorCode.STORAGE_ERROR, f"reading s3://{bucket}/{key} failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise TtsError(ErrorCode.STORAGE_ERROR, f"storage unreachable: {type(exc).__name__}") from None

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise TtsError(ErrorCode.STORAGE_ERROR, f"listing s3://{bucket}/{prefix} failed: "
                           f"{type(exc).__name__}") from None
        return keys

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            self.client.create_bucket(Bucket=bucket)

    def probe(self) -> str | None:
        """None when the output bucket is reachable, else a short reason (for health events)."""
        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
            return None
        except ClientError as exc:
            return f"storage: bucket {self.settings.bucket}: {_code(exc)}"
        except BotoCoreError as exc:
            return f"storage: {type(exc).__name__}"


def content_addressed(loc: S3Location, sha256: str) -> S3Location:
    """Where one attempt's audio is stored: ``<prefix>/<request_id>.wav`` becomes
    ``<prefix>/<request_id>/<sha256>.wav`` (any extension is kept the same way).

    The key names the bytes, so whatever writes it writes exactly those bytes: a late writer (a zombie
    that lost its partition, a PUT in flight at revocation, a redo on another GPU that renders other
    bytes) can only add a sibling object, never change the one a committed result names. Siblings that
    no result names are orphans; docs/operations.md says how they expire.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    stem, ext = posixpath.splitext(loc.key)
    return S3Location(loc.bucket, f"{stem}/{sha256}{ext}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))

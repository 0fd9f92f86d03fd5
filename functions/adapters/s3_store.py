"""ObjectStore on any S3 API (MinIO, AWS S3, Ceph RGW) with boto3.

Credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION, or a profile); the
endpoint and bucket from DOCLANE_S3_ENDPOINT_URL and DOCLANE_S3_BUCKET.
Addressing is path-style so a MinIO on one host name works without DNS
per bucket.

botocore's exceptions never leave this module: a missing object is
`NotFound`; an unreachable endpoint, throttling or a 5xx is `Retryable`; a
missing bucket, bad credentials or denied access is `ConfigError` with what
to change (retrying the same event would not help until someone acts).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                 HTTPClientError, NoCredentialsError, ParamValidationError, PartialCredentialsError)

from doclane.functions.errors import ConfigError, NotFound, Retryable
from doclane.functions.ports import ObjectInfo

T = TypeVar("T")

# Where the artefact store (parsed documents) lives inside the document
# bucket when no DOCLANE_S3_ARTEFACT_BUCKET is set. Ingest ignores it.
ARTEFACT_PREFIX = ".doclane/artefacts/"

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
              "InternalError", "ServiceUnavailable", "XMinioServerNotInitialized", "XMinioStorageFull",
              "503", "500", "502", "504"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "AllAccessDisabled", "AccountProblem"}


class S3Store:
    """One bucket (optionally a key prefix inside it) of an S3 endpoint."""

    def __init__(self, client: Any, bucket: str, *, prefix: str = "", endpoint: str | None = None):
        if not bucket:
            raise ConfigError("no S3 bucket: set DOCLANE_S3_BUCKET")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint or "AWS S3"
        self._others: dict[str, S3Store] = {}

    @classmethod
    def from_settings(cls, settings, *, bucket: str | None = None, prefix: str = "") -> "S3Store":
        bucket = bucket or settings.s3_bucket
        if not bucket:
            raise ConfigError("DOCLANE_S3_ENDPOINT_URL is set but DOCLANE_S3_BUCKET is not: name the bucket "
                              "doclane reads documents from")
        return cls(client(settings.s3_endpoint_url), bucket, prefix=prefix, endpoint=settings.s3_endpoint_url)

    def for_bucket(self, bucket: str) -> "S3Store":
        """The same endpoint and credentials, another bucket: a notification
        may name any bucket the endpoint serves."""
        if bucket == self.bucket and not self.prefix:
            return self
        if bucket not in self._others:
            self._others[bucket] = S3Store(self.client, bucket, endpoint=self.endpoint)
        return self._others[bucket]

    # ------------------------------------------------------------------ the port
    def get(self, key: str) -> bytes:
        resp = self._call("get", key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key)))
        with resp["Body"] as body:
            return body.read()

    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        extra = {"ContentType": content_type} if content_type else {}
        resp = self._call("put", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **extra))
        return ObjectInfo(self.bucket, key, len(data), _etag(resp.get("ETag")), content_type)

    def head(self, key: str) -> ObjectInfo:
        resp = self._call("head", key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)))
        return ObjectInfo(self.bucket, key, int(resp["ContentLength"]), _etag(resp.get("ETag")),
                          _content_type(resp.get("ContentType")))

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too: deleting is idempotent.
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        iterator = iter(pages)
        while True:
            page = self._call("list", prefix, lambda: next(iterator, None))
            if page is None:
                return
            for obj in page.get("Contents", []):
                yield ObjectInfo(self.bucket, obj["Key"][len(self.prefix):], int(obj["Size"]), _etag(obj.get("ETag")))

    # ------------------------------------------------------------------ checks
    def check(self) -> str:
        """Can we reach the bucket? Raises like the port methods; used by doctor."""
        self._call("check", "", lambda: self.client.head_bucket(Bucket=self.bucket))
        return f"bucket {self.bucket} reachable"

    # ------------------------------------------------------------------ errors
    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        where = f"s3://{self.bucket}/{self._key(key)} at {self.endpoint}"
        try:
            return fn()
        except ClientError as exc:
            raise translate(exc, op, where, self.bucket) from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigError(f"{op} {where}: {exc}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except ParamValidationError as exc:
            raise ConfigError(f"{op} {where}: {exc}; check DOCLANE_S3_BUCKET") from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise Retryable(f"{op} {where}: {exc}") from None
        except BotoCoreError as exc:  # anything else botocore raises is about the transport
            raise Retryable(f"{op} {where}: {type(exc).__name__}: {exc}") from None


def translate(exc: ClientError, op: str, where: str, bucket: str) -> Exception:
    """An S3 error answer as one of doclane's errors."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = err.get("Message") or code or f"HTTP {status}"
    if code == "NoSuchBucket" or (code == "404" and op == "check"):
        return ConfigError(f"bucket {bucket!r} does not exist at this endpoint ({where}): create it "
                           f"(mc mb <alias>/{bucket}, aws s3 mb s3://{bucket}) or fix DOCLANE_S3_BUCKET")
    if code in _MISSING or status == 404:
        return NotFound(f"{where} does not exist")
    if code in _DENIED or status == 403:
        return ConfigError(f"{op} {where}: access denied ({message}); check AWS_ACCESS_KEY_ID / "
                           "AWS_SECRET_ACCESS_KEY and the bucket policy")
    if code == "InvalidBucketName":
        return ConfigError(f"{op} {where}: {message}; fix DOCLANE_S3_BUCKET")
    if code in _TRANSIENT or status >= 500 or status == 429:
        return Retryable(f"{op} {where}: {message} (HTTP {status})")
    return ConfigError(f"{op} {where}: {code or status}: {message}")


def client(endpoint_url: str | None, *, timeout: float = 10.0, attempts: int = 3) -> Any:
    """A boto3 S3 client for the endpoint (None = AWS), path-style addressing."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(
        s3={"addressing_style": "path"},
        connect_timeout=timeout, read_timeout=max(timeout, 30.0),
        retries={"total_max_attempts": attempts, "mode": "standard"},  # botocore retries 5xx/throttling first
        signature_version="s3v4",
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def _content_type(value: str | None) -> str | None:
    # S3 answers binary/octet-stream for objects put without a type: that says nothing.
    return None if value in (None, "", "binary/octet-stream", "application/octet-stream") else value

"""The S3-compatible ``ArtifactStore`` (MinIO, Ceph RGW, AWS S3, GCS interoperability), on boto3: the one
module that touches boto3 and botocore.

boto3 because it is AWS's own SDK, kept in step with the S3 API, and handles what an object store needs
here: multipart uploads and ranged parallel downloads of large checkpoints (s3transfer), retries with
back-off, path- and virtual-host addressing, and every credential source (keys, environment, web identity,
instance profiles); ``mypy-boto3-s3`` types it.
"""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from mypy_boto3_s3.client import S3Client

from mt_contracts.settings import StorageSettings
from mt_storage.store import ObjectInfo, StoreError

_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


class S3Store:
    """``ArtifactStore`` on bucket ``bucket``, every key under ``prefix``."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3Store:
        """A store from ``STORAGE__S3_*``.

        Raises:
            StoreError: no bucket is set.
        """
        if not settings.s3_bucket:
            raise StoreError("STORAGE__BACKEND is s3 but STORAGE__S3_BUCKET is empty; name the bucket")
        config = Config(
            s3={"addressing_style": settings.s3_addressing_style},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            config=config,
        )
        return cls(client, settings.s3_bucket, settings.s3_prefix)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put_file(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"uploading s3://{self.bucket}/{self._key(key)} failed: {exc}") from exc

    def get_file(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"downloading s3://{self.bucket}/{self._key(key)} failed: {exc}") from exc

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for item in page.get("Contents", []):
                    key = item.get("Key", "")
                    found.append(
                        ObjectInfo(
                            key=key.removeprefix(self.prefix),
                            size=item.get("Size", 0),
                            etag=item.get("ETag", "").strip('"'),
                        )
                    )
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"listing s3://{self.bucket}/{self._key(prefix)} failed: {exc}") from exc
        return sorted(found, key=lambda info: info.key)

    def delete(self, keys: list[str]) -> None:
        try:
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start : start + _DELETE_BATCH]
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(key)} for key in batch], "Quiet": True}
                )
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"deleting from s3://{self.bucket}/{self.prefix} failed: {exc}") from exc

    def check(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            return f"storage: bucket {self.bucket} is not usable: {exc}"
        except BotoCoreError as exc:
            return f"storage: the object store did not answer: {exc}"
        return None

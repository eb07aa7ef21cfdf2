"""The artifact store: every file that passes between services lives in one S3 bucket.

Writes never publish half an object: bytes go to a temporary key, the server's checksum is compared with the
one computed locally, and only then is the object copied to its final key. Reads verify sha256 before the
file appears at its destination. Works against MinIO, SeaweedFS or AWS through the `minio` SDK.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from meshai_common.config import S3Settings
from meshai_common.errors import IntegrityError, InvalidInput, NotFound, Unavailable

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024  # multipart above this; fixed so the expected multipart ETag can be computed
SHA_META = "sha256"  # user metadata key recording the content hash (x-amz-meta-sha256)
TMP_PREFIX = "_tmp/"  # in-flight uploads; never read by anyone


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_digests(path: Path, part_size: int = PART_SIZE) -> tuple[str, str, int]:
    """sha256, the S3 ETag the upload must produce, and the size: one read of the file."""
    sha = hashlib.sha256()
    part_md5s: list[bytes] = []
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(part_size):
            sha.update(chunk)
            part_md5s.append(hashlib.md5(chunk).digest())
            size += len(chunk)
    if len(part_md5s) <= 1:
        etag = (part_md5s[0] if part_md5s else hashlib.md5(b"").digest()).hex()
    else:
        etag = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"
    return sha.hexdigest(), etag, size


def sha256_file(path: Path) -> str:
    return file_digests(path)[0]


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/") or "\\" in key:
        raise InvalidInput(f"invalid object key {key!r}")
    return key


class ArtifactStore:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        # Short connect timeout and few retries: an unreachable bucket must fail in seconds with a clear
        # message, not hang a job for minutes inside urllib3's default retry loop.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=120.0),
            retries=urllib3.Retry(total=2, backoff_factor=0.3, status_forcelist=[500, 502, 503, 504]),
            maxsize=8,
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    @classmethod
    def from_env(cls) -> ArtifactStore:
        return cls(S3Settings.from_env())

    def describe(self) -> str:
        return f"s3://{self.bucket} at {self.settings.endpoint}"

    # -- reachability ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise Unavailable, naming the endpoint and the cause, unless the bucket answers."""
        try:
            if not self.client.bucket_exists(self.bucket):
                raise Unavailable(f"bucket {self.bucket!r} does not exist at {self.settings.endpoint}")
        except Unavailable:
            raise
        except S3Error as exc:
            raise Unavailable(f"S3 at {self.settings.endpoint} refused access: {exc.code}: {exc.message}") from exc
        except Exception as exc:  # urllib3 wraps socket errors in several types
            raise Unavailable(f"cannot reach S3 at {self.settings.endpoint}: {_root_cause(exc)}") from exc

    def ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
                log.info("created bucket", extra={"bucket": self.bucket})
        except S3Error as exc:
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise Unavailable(f"cannot create bucket {self.bucket!r}: {exc.code}: {exc.message}") from exc
        except Exception as exc:
            raise Unavailable(f"cannot reach S3 at {self.settings.endpoint}: {_root_cause(exc)}") from exc

    # -- writes ---------------------------------------------------------------------------------------

    def put_file(
        self, path: Path, key: str, *, expected_sha256: str | None = None, content_type: str | None = None
    ) -> StoredObject:
        """Upload a file: temporary key, server checksum verified, then published at `key`."""
        _check_key(key)
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"cannot upload {path}: no such file")
        sha, etag, size = file_digests(path)
        if expected_sha256 and expected_sha256 != sha:
            raise IntegrityError(f"{path} has sha256 {sha[:12]}…, expected {expected_sha256[:12]}…; not uploaded")
        tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}/{key.rsplit('/', 1)[-1]}"
        try:
            result = self._call(
                self.client.fput_object,
                self.bucket,
                tmp,
                str(path),
                content_type=content_type or "application/octet-stream",
                metadata={SHA_META: sha},
                part_size=PART_SIZE,
            )
            self._verify_upload(tmp, result.etag, etag, sha, size)
            self._publish(tmp, key, size)
        finally:
            self._remove_quietly(tmp)
        return StoredObject(key, sha, size)

    def put_bytes(self, data: bytes, key: str, content_type: str = "application/octet-stream") -> StoredObject:
        with tempfile.TemporaryDirectory() as tmpdir:
            path = Path(tmpdir) / "blob"
            path.write_bytes(data)
            return self.put_file(path, key, content_type=content_type)

    def put_json(self, obj: Any, key: str) -> StoredObject:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        return self.put_bytes(data, key, content_type="application/json")

    def put_dir(self, local_dir: Path, prefix: str) -> list[StoredObject]:
        """Upload every file below a folder under `prefix/`; callers record the list in a manifest."""
        local_dir = Path(local_dir)
        prefix = prefix.rstrip("/")
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        if not files:
            raise InvalidInput(f"cannot upload folder {local_dir}: it holds no files")
        return [self.put_file(p, f"{prefix}/{p.relative_to(local_dir).as_posix()}") for p in files]

    def _verify_upload(self, tmp: str, returned_etag: str | None, expected_etag: str, sha: str, size: int) -> None:
        stat = self._call(self.client.stat_object, self.bucket, tmp)
        if stat.size != size:
            raise IntegrityError(f"upload of {tmp} stored {stat.size} bytes, sent {size}")
        server_etag = (returned_etag or stat.etag or "").strip('"')
        if _looks_like_s3_etag(server_etag):
            if server_etag != expected_etag:
                raise IntegrityError(f"upload checksum mismatch: server ETag {server_etag}, expected {expected_etag}")
            return
        # A server whose ETag is not MD5-based: read the bytes back and hash them.
        got = hashlib.sha256()
        for chunk in self._stream(tmp):
            got.update(chunk)
        if got.hexdigest() != sha:
            raise IntegrityError(f"upload checksum mismatch for {tmp}: stored bytes do not hash to {sha[:12]}…")

    def _publish(self, tmp: str, key: str, size: int) -> None:
        # A server-side copy keeps the metadata (sha256) and makes the final key appear all at once.
        if size <= 5 * 1024**3:
            self._call(self.client.copy_object, self.bucket, key, CopySource(self.bucket, tmp))
        else:
            from minio.commonconfig import ComposeSource

            self._call(self.client.compose_object, self.bucket, key, [ComposeSource(self.bucket, tmp)])
        stat = self._call(self.client.stat_object, self.bucket, key)
        if stat.size != size:
            self._remove_quietly(key)
            raise IntegrityError(f"publishing {key} produced {stat.size} bytes, expected {size}")

    # -- reads ----------------------------------------------------------------------------------------

    def stat(self, key: str) -> StoredObject:
        _check_key(key)
        st = self._call(self.client.stat_object, self.bucket, key)
        sha = (st.metadata or {}).get(f"x-amz-meta-{SHA_META}") or (st.metadata or {}).get(
            f"X-Amz-Meta-{SHA_META.capitalize()}", ""
        )
        return StoredObject(key, sha or "", st.size or 0)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except NotFound:
            return False

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> StoredObject:
        """Download to `dest`, verifying sha256 (the caller's, else the one recorded at upload).
        `progress(done_bytes, total_bytes)` is called after each part received."""
        info = self.stat(key)
        want = expected_sha256 or info.sha256
        if not want:
            raise IntegrityError(f"{key} has no recorded sha256; refusing an unverifiable download")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        got = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in self._stream(key):
                    got.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
                    if progress is not None:
                        progress(size, info.size)
            if got.hexdigest() != want:
                raise IntegrityError(
                    f"checksum mismatch for s3://{self.bucket}/{key}: got sha256 {got.hexdigest()[:12]}…, "
                    f"expected {want[:12]}…"
                )
            os.replace(tmp_name, dest)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        return StoredObject(key, want, size)

    def get_bytes(self, key: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmpdir:
            path = Path(tmpdir) / "blob"
            self.get_file(key, path)
            return path.read_bytes()

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"s3://{self.bucket}/{key} is not valid JSON: {exc}") from exc

    def get_refs(self, refs: Iterable[StoredObject | dict], dest_dir: Path, strip_prefix: str) -> list[Path]:
        """Download objects recorded in a manifest into a folder, each verified against its sha256."""
        out = []
        strip = strip_prefix.rstrip("/") + "/"
        for ref in refs:
            ref = ref if isinstance(ref, StoredObject) else StoredObject(**ref)
            if not ref.key.startswith(strip):
                raise InvalidInput(f"object {ref.key} is not under {strip}")
            path = Path(dest_dir) / ref.key[len(strip) :]
            self.get_file(ref.key, path, expected_sha256=ref.sha256)
            out.append(path)
        return out

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(
                o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            )
        except S3Error as exc:
            raise Unavailable(f"cannot list s3://{self.bucket}/{prefix}: {exc.code}") from exc
        except Exception as exc:
            raise Unavailable(f"cannot reach S3 at {self.settings.endpoint}: {_root_cause(exc)}") from exc

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self._remove_quietly(key)
        return len(keys)

    # -- plumbing -------------------------------------------------------------------------------------

    def _stream(self, key: str) -> Iterator[bytes]:
        resp = self._call(self.client.get_object, self.bucket, key)
        try:
            yield from resp.stream(1024 * 1024)
        finally:
            resp.close()
            resp.release_conn()

    def _remove_quietly(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except Exception:  # best effort: a stale _tmp/ object is harmless
            log.warning("could not remove temporary object", extra={"key": key})

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}:
                raise NotFound(f"no object s3://{self.bucket}/{args[1] if len(args) > 1 else ''}") from exc
            if exc.code == "NoSuchBucket":
                raise Unavailable(f"bucket {self.bucket!r} does not exist at {self.settings.endpoint}") from exc
            raise Unavailable(f"S3 error from {self.settings.endpoint}: {exc.code}: {exc.message}") from exc
        except (IntegrityError, NotFound, InvalidInput):
            raise
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"cannot reach S3 at {self.settings.endpoint}: {_root_cause(exc)}") from exc
        except OSError as exc:
            raise Unavailable(f"I/O error talking to S3 at {self.settings.endpoint}: {exc}") from exc


def _looks_like_s3_etag(etag: str) -> bool:
    head, _, parts = etag.partition("-")
    return len(head) == 32 and all(c in "0123456789abcdef" for c in head) and (not parts or parts.isdigit())


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text.splitlines()[0][:200] if text else type(exc).__name__



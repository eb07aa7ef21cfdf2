"""The artifact store against a real S3 server: publish only verified bytes, detect corruption, fail clearly."""

from __future__ import annotations

import io
import os
import time

import pytest

from meshai_common.config import S3Settings
from meshai_common.errors import IntegrityError, InvalidInput, NotFound, Unavailable
from meshai_common.store import PART_SIZE, TMP_PREFIX, ArtifactStore, file_digests


def test_round_trip_small_and_multipart(store, tmp_path):
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1234))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(PART_SIZE * 2 + 17))  # three parts: exercises the multipart ETag check

    for path in (small, big):
        obj = store.put_file(path, f"runs/r1/x/{path.name}")
        assert obj.sha256 == file_digests(path)[0]
        assert obj.size == path.stat().st_size
        assert store.stat(obj.key).sha256 == obj.sha256
        out = tmp_path / "out" / path.name
        store.get_file(obj.key, out)
        assert out.read_bytes() == path.read_bytes()
    # Nothing is left under the temporary prefix once uploads are published.
    assert store.list(TMP_PREFIX) == []


def test_corrupted_object_is_detected_and_not_written(store, tmp_path):
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF" + os.urandom(4096))
    obj = store.put_file(src, "models/m/model.gguf")
    # Someone overwrites the object behind the store's back.
    store.client.put_object(store.bucket, obj.key, io.BytesIO(b"garbage"), 7)
    dest = tmp_path / "dl" / "model.gguf"
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        store.get_file(obj.key, dest, expected_sha256=obj.sha256)
    assert not dest.exists()
    assert not any(p.name.endswith(".part") for p in dest.parent.iterdir())


def test_failed_upload_publishes_nothing(store, tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text('{"messages": []}\n')
    with pytest.raises(IntegrityError):
        store.put_file(src, "runs/r1/data/train.jsonl", expected_sha256="0" * 64)
    assert not store.exists("runs/r1/data/train.jsonl")
    assert store.list("") == []


def test_upload_changing_under_us_is_rejected(store, tmp_path, monkeypatch):
    """Bytes that differ from what was hashed fail the server-checksum comparison; the final key never appears."""
    import meshai_common.store as store_mod

    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2048))
    real = store_mod.file_digests

    def digests_then_modify(path, part_size=PART_SIZE):
        result = real(path, part_size)
        path.write_bytes(os.urandom(2048))  # the file changes after it was hashed
        return result

    monkeypatch.setattr(store_mod, "file_digests", digests_then_modify)
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        store.put_file(src, "runs/r1/f.bin")
    assert not store.exists("runs/r1/f.bin")
    assert store.list(TMP_PREFIX) == []


def test_json_and_dir_helpers(store, tmp_path):
    store.put_json({"a": 1}, "runs/r/manifest.json")
    assert store.get_json("runs/r/manifest.json") == {"a": 1}
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "w.bin").write_bytes(b"123")
    objs = store.put_dir(d, "runs/r/train/merged")
    assert sorted(o.key for o in objs) == ["runs/r/train/merged/config.json", "runs/r/train/merged/sub/w.bin"]
    with pytest.raises(InvalidInput, match="holds no files"):
        store.put_dir(tmp_path / "empty-missing", "x")


def test_missing_object_and_bad_keys(store, tmp_path):
    with pytest.raises(NotFound, match="no object"):
        store.get_file("runs/nope/x.json", tmp_path / "x")
    for bad in ("", "/abs", "a/../b"):
        with pytest.raises(InvalidInput):
            store.stat(bad)


def test_unreachable_bucket_fails_fast_with_endpoint_named():
    from meshai_common.net import free_port

    port = free_port()
    st = ArtifactStore(S3Settings(f"127.0.0.1:{port}", "a", "b", "bucket"))
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match=f"cannot reach S3 at 127.0.0.1:{port}"):
        st.ping()
    assert time.monotonic() - t0 < 15


def test_wrong_credentials_are_reported(s3_server):
    st = ArtifactStore(S3Settings(s3_server["endpoint"], s3_server["access_key"], "wrong-secret", "bucket"))
    with pytest.raises(Unavailable, match="refused access"):
        st.ping()

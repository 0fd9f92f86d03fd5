"""One ObjectStore contract for every adapter: the folder store, and the S3
store against a real HTTP S3 API (moto's server on loopback). Then what only
S3 has: prefixes, other buckets of the endpoint, and the translation of S3's
error answers (a tiny HTTP server answers with S3's error XML where moto
cannot be made to: throttling, 5xx, access denied)."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from doclane.functions.adapters.folder_store import FolderStore
from doclane.functions.adapters.s3_store import ARTEFACT_PREFIX, S3Store
from doclane.functions.errors import ConfigError, NotFound, Retryable
from doclane.functions.settings import Settings
from tests.e2e.harness import free_port


@pytest.fixture
def aws_env(moto, monkeypatch):
    for name, value in moto.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto


def s3_settings(endpoint: str | None, bucket: str | None, **extra) -> Settings:
    return Settings(s3_endpoint_url=endpoint, s3_bucket=bucket, **extra)


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path):
    if request.param == "folder":
        return FolderStore(tmp_path / "bucket", bucket="bucket")
    moto = request.getfixturevalue("aws_env")
    name = moto.bucket(f"contract-{uuid.uuid4().hex[:12]}")
    return S3Store.from_settings(s3_settings(moto.endpoint, name))


# --------------------------------------------------------------------------- the contract
def test_put_then_get_head_and_list(store):
    info = store.put("reports/2024/q1.pdf", b"%PDF-1.4 first", "application/pdf")
    assert (info.bucket, info.key, info.size) == (store.bucket, "reports/2024/q1.pdf", 14)
    assert store.get("reports/2024/q1.pdf") == b"%PDF-1.4 first"
    head = store.head("reports/2024/q1.pdf")
    assert (head.key, head.size, head.content_type) == ("reports/2024/q1.pdf", 14, "application/pdf")
    assert head.etag


def test_missing_objects_are_not_found(store):
    with pytest.raises(NotFound):
        store.get("nope/missing.pdf")
    with pytest.raises(NotFound):
        store.head("nope/missing.pdf")


def test_overwrite_changes_size_and_etag(store):
    first = store.put("a.txt", b"one", "text/plain")
    store.put("a.txt", b"second version", "text/plain")
    second = store.head("a.txt")
    assert store.get("a.txt") == b"second version"
    assert second.size == 14 and second.etag != first.etag


def test_delete_is_idempotent(store):
    store.put("gone.txt", b"x", "text/plain")
    store.delete("gone.txt")
    store.delete("gone.txt")  # deleting what is not there is not an error
    with pytest.raises(NotFound):
        store.get("gone.txt")


def test_list_by_prefix_with_unusual_key_names(store):
    keys = ["in/Q1 résumé+plan.pdf", "in/sub/b.txt", "out/c.txt"]
    for i, key in enumerate(keys):
        store.put(key, b"x" * (i + 1), "text/plain")
    listed = {o.key: o.size for o in store.list("in/")}
    assert listed == {"in/Q1 résumé+plan.pdf": 1, "in/sub/b.txt": 2}
    assert {o.key for o in store.list()} == set(keys)
    assert store.get("in/Q1 résumé+plan.pdf") == b"x"


# --------------------------------------------------------------------------- S3 only
def test_a_prefixed_store_keeps_its_keys_under_the_prefix(aws_env):
    name = aws_env.bucket(f"prefix-{uuid.uuid4().hex[:12]}")
    artefacts = S3Store.from_settings(s3_settings(aws_env.endpoint, name), prefix=ARTEFACT_PREFIX)
    artefacts.put("doc1/abc.parsed.json", b"{}", "application/json")
    assert [o.key for o in artefacts.list("doc1/")] == ["doc1/abc.parsed.json"]
    raw = aws_env.client().list_objects_v2(Bucket=name)["Contents"]
    assert [o["Key"] for o in raw] == [ARTEFACT_PREFIX + "doc1/abc.parsed.json"]


def test_another_bucket_of_the_same_endpoint_is_readable(aws_env):
    home = aws_env.bucket(f"home-{uuid.uuid4().hex[:12]}")
    other = aws_env.bucket(f"other-{uuid.uuid4().hex[:12]}")
    aws_env.client().put_object(Bucket=other, Key="x.txt", Body=b"elsewhere")
    store = S3Store.from_settings(s3_settings(aws_env.endpoint, home))
    assert store.for_bucket(other).get("x.txt") == b"elsewhere"
    assert store.for_bucket(other) is store.for_bucket(other) and store.for_bucket(home) is store


def test_a_missing_bucket_is_a_config_error_naming_it(aws_env):
    store = S3Store.from_settings(s3_settings(aws_env.endpoint, "no-such-bucket-here"))
    with pytest.raises(ConfigError, match="no-such-bucket-here.*DOCLANE_S3_BUCKET"):
        store.get("a.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        store.check()


def test_an_endpoint_without_bucket_is_a_config_error():
    with pytest.raises(ConfigError, match="DOCLANE_S3_BUCKET"):
        S3Store.from_settings(s3_settings("http://127.0.0.1:9000", None))


def test_missing_credentials_say_which_variables_to_set(aws_env, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    store = S3Store.from_settings(s3_settings(aws_env.endpoint, "whatever-bucket"))
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        store.get("a.txt")


def test_an_unreachable_endpoint_is_retryable(aws_env):
    store = S3Store.from_settings(s3_settings(f"http://127.0.0.1:{free_port()}", "some-bucket"))
    with pytest.raises(Retryable, match="some-bucket"):
        store.get("a.txt")


class _S3Errors:
    """An endpoint that answers every request with one S3 error document."""

    def __init__(self, status: int, code: str):
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{code} from the test endpoint</Message></Error>").encode()
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                outer.calls += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize("status, code, error, message", [
    (503, "SlowDown", Retryable, "SlowDown"),
    (500, "InternalError", Retryable, "InternalError"),
    (403, "AccessDenied", ConfigError, "access denied.*AWS_ACCESS_KEY_ID"),
    (400, "InvalidBucketName", ConfigError, "DOCLANE_S3_BUCKET"),
])
def test_error_answers_are_translated(aws_env, status, code, error, message):
    endpoint = _S3Errors(status, code)
    try:
        store = S3Store.from_settings(s3_settings(endpoint.endpoint, "a-bucket"))
        with pytest.raises(error, match=message):
            store.get("a.txt")
        if error is Retryable:
            assert endpoint.calls == 3  # botocore retried before giving up
    finally:
        endpoint.server.shutdown()

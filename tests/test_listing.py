"""Data fingerprints from object-store listings (`inflame.data.listing`): each store's own
checksums stand for a mounted input only when the mount holds exactly the listed names and
sizes; otherwise, and wherever no listing can be had, the files are hashed and the manifest
says why. S3 runs on moto, GCS and Azure Blob on this project's loopback fakes (pages,
composite objects and blobs without Content-MD5 included)."""

from __future__ import annotations

import base64
import functools
import hashlib
import sys
from pathlib import Path

import boto3
import google_crc32c
import pytest
from moto import mock_aws

from inflame.data import listing
from inflame.data.listing import SHA256, adopt_listing, content_ids, forget_listings
from inflame.hashing import sha256_bytes, tree_digest
from inflame.runs import hash_data_inputs
from tests.fakes.azureml import FakeAzureML
from tests.fakes.gcp import FakeGCP

FILES = {
    "train/cat/a.jpg": b"a" * 3,
    "train/dog/b.jpg": b"b" * 4,
    "val/cat/c.jpg": b"c" * 10,
    "val/dog/d e.jpg": b"d" * 7,  # a space: keys and paths must agree
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_listings()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="data")
        for name, body in FILES.items():
            client.put_object(Bucket="data", Key=f"fowl/{name}", Body=body)
        client.put_object(Bucket="data", Key="fowl/train/", Body=b"")  # a console folder
        client.put_object(Bucket="data", Key="fowl/.DS_Store", Body=b"junk")  # walk skips it
        client.put_object(Bucket="data", Key="fowler/x.jpg", Body=b"x")  # same prefix, no /
        yield client


def test_s3_etags_stand_for_a_matching_mount_without_reading_it(s3, tmp_path, monkeypatch):
    mount = write_tree(tmp_path / "channel", FILES)
    assert adopt_listing("s3://data/fowl", mount) is None
    monkeypatch.setattr("inflame.hashing.sha256_file", None)  # any file read now fails

    ids, source = content_ids(mount)
    assert ids == {name: f"s3-etag:{hashlib.md5(data).hexdigest()}" for name, data in FILES.items()}
    assert source == "S3 ETag from the listing of s3://data/fowl"
    below, _ = content_ids(mount / "train")  # a dataset rooted below the input
    assert below == {"cat/a.jpg": ids["train/cat/a.jpg"], "dog/b.jpg": ids["train/dog/b.jpg"]}

    record = hash_data_inputs({"images": mount})["inputs"]["images"]
    assert record["checksums"] == source and record["file_count"] == 4
    assert record["fingerprint"] == tree_digest(ids)


def test_changed_content_changes_the_fingerprint(s3, tmp_path):
    mount = write_tree(tmp_path / "channel", FILES)
    assert adopt_listing("s3://data/fowl/", mount) is None
    before = hash_data_inputs({"images": mount})["fingerprint"]
    s3.put_object(Bucket="data", Key="fowl/val/cat/c.jpg", Body=b"C" * 10)  # same size
    write_tree(mount, {"val/cat/c.jpg": b"C" * 10})
    forget_listings()
    assert adopt_listing("s3://data/fowl/", mount) is None
    assert hash_data_inputs({"images": mount})["fingerprint"] != before


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"val/cat/c.jpg": b"c" * 11}, "val/cat/c.jpg has 11 bytes mounted, 10 listed"),
        ({"val/cat/new.jpg": b"n"}, "val/cat/new.jpg is mounted but not listed"),
        (None, "train/cat/a.jpg is listed but not mounted"),
    ],
)
def test_a_mount_that_differs_from_the_listing_is_hashed(s3, tmp_path, change, says):
    mount = write_tree(tmp_path / "channel", FILES)
    if change is None:
        (mount / "train/cat/a.jpg").unlink()
    else:
        write_tree(mount, change)
    note = adopt_listing("s3://data/fowl", mount)
    assert note is not None and says in note and "1 difference(s)" in note
    ids, source = content_ids(mount)
    assert source == SHA256
    assert ids["train/dog/b.jpg"] == sha256_bytes(FILES["train/dog/b.jpg"])
    record = hash_data_inputs({"images": mount}, {"images": note})["inputs"]["images"]
    assert record["checksums"] == SHA256 and record["listing_unused"] == note


def test_what_cannot_be_listed_is_hashed_and_says_why(s3, tmp_path, monkeypatch):
    mount = write_tree(tmp_path / "channel", FILES)
    note = adopt_listing("s3://no-such-bucket/fowl", mount)
    assert note is not None and note.startswith("listing s3://no-such-bucket/fowl failed")
    assert "NoSuchBucket" in note
    note = adopt_listing("azureml://datastores/workspaceblobstore/paths/fowl", mount)
    assert note == "azureml:// inputs have no listing inflame can read"
    monkeypatch.setitem(sys.modules, "boto3", None)  # an image without the SDK
    assert adopt_listing("s3://data/fowl", mount) == "boto3 is not installed in the job's image"
    assert content_ids(mount)[1] == SHA256


def test_gcs_md5_or_crc32c_across_pages(tmp_path, monkeypatch):
    with FakeGCP(tmp_path / "gcs") as fake:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.endpoint)
        mount = write_tree(tmp_path / "gcs" / "bucket" / "fowl", FILES)  # /gcs/bucket/fowl
        fake.page_size = 2
        fake.composite.add("fowl/val/cat/c.jpg")
        assert adopt_listing("gs://bucket/fowl", mount) is None
        ids, source = content_ids(mount)
        listings = [path for method, path, _ in fake.requests if "/o?" in path]
        assert len(listings) == 2  # four objects, two pages
    crc = base64.b64encode(google_crc32c.Checksum(FILES["val/cat/c.jpg"]).digest()).decode()
    expected = {name: f"gcs-md5:{md5_b64(data)}" for name, data in FILES.items()}
    assert ids == expected | {"val/cat/c.jpg": f"gcs-crc32c:{crc}"}
    assert source == "GCS md5Hash/crc32c from the listing of gs://bucket/fowl"


@pytest.mark.parametrize(
    "uri",
    [
        "https://fakeacct.blob.core.windows.net/data/fowl",
        "wasbs://data@fakeacct.blob.core.windows.net/fowl",
    ],
)
def test_azure_blob_content_md5_or_etag(tmp_path, monkeypatch, uri):
    with FakeAzureML() as fake:
        fake.put_folder("data", "fowl/", write_tree(tmp_path / "src", FILES))
        fake.put_folder("other", "fowl/", write_tree(tmp_path / "other", {"x.jpg": b"x"}))
        fake.without_md5.add("fowl/val/dog/d e.jpg")  # uploaded in blocks
        lister = functools.partial(
            listing.list_azure_blob, credential=fake.credential(), **fake.blob_options()
        )
        monkeypatch.setattr(listing, "list_azure_blob", lister)
        mount = write_tree(tmp_path / "mount", FILES)
        assert adopt_listing(uri, mount) is None
    ids, source = content_ids(mount)
    assert ids["train/cat/a.jpg"] == f"azure-md5:{md5_b64(FILES['train/cat/a.jpg'])}"
    assert ids["val/dog/d e.jpg"].startswith("azure-etag:0x")
    assert set(ids) == set(FILES) and source.endswith(f"from the listing of {uri}")

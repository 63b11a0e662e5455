"""The content identity of a data folder without reading it: inside cloud jobs, the object
store's own checksums from one listing of the input's URI.

`tree_hashes` reads every file to hash it. A cloud job's inputs are object-store prefixes
that the platform downloaded or mounted (SageMaker channels, Vertex AI's /gcs, Azure ML
mounts), and the store already knows a checksum of every object: S3's ETag, GCS's md5Hash
(crc32c for composite objects), Azure Blob's Content-MD5 (else its ETag). `adopt_listing`
lists the prefix with the provider's SDK (present in the providers' training images;
credentials from the job's role), checks that the mounted folder holds exactly the listed
names with the listed sizes (a stat per file, no reads), and registers the checksums for that
folder. `content_ids` then answers for the folder or any folder below it, so the manifest's
data fingerprint and the decode cache's key cost one listing instead of a full read. Where
no listing can be used (no SDK in the image, no permission, a datastore URI, a mismatch), the
reason is returned and the files are hashed as everywhere else.

Identities from a listing carry their kind (`s3-etag:…`, `gcs-md5:…`, `azure-md5:…`); file
hashes are bare sha256 hex, as in local manifests.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inflame.hashing import IGNORED_NAMES, tree_hashes, walk_files

SHA256 = "sha256 of every file"
_ADOPTED: dict[Path, tuple[dict[str, str], str]] = {}  # folder -> (identities, source)


class ListingUnavailable(Exception):
    """The listing cannot be used; the message says why (the files are hashed instead)."""


@dataclass(frozen=True)
class Listing:
    """Every object below a prefix: relative name -> (size, identity)."""

    uri: str
    kind: str  # what the identities are, in words ("S3 ETag")
    objects: dict[str, tuple[int, str]]


def is_ignored(name: str) -> bool:
    """Whether `walk_files` leaves this relative name out (so a listing does too)."""
    parts = name.split("/")
    last = parts[-1]
    return any(p in IGNORED_NAMES for p in parts) or (last.endswith(".pyc") and last != ".pyc")


def _relative(key: str, prefix: str) -> str | None:
    """The object's name below the prefix; None for folder markers and ignored names."""
    name = key[len(prefix) :]
    if not name or name.endswith("/") or is_ignored(name):
        return None
    return name


def _folder_prefix(path: str) -> str:
    path = path.strip("/")
    return f"{path}/" if path else ""


def _b64(value: Any) -> str:
    return base64.b64encode(bytes(value)).decode()


def _require(module: str, sdk: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ListingUnavailable(f"{sdk} is not installed in the job's image") from None


def list_s3(uri: str) -> Listing:
    """ListObjectsV2 over the prefix (1,000 objects a call); the identity is the ETag."""
    boto3 = _require("boto3", "boto3")
    parts = urlsplit(uri)
    prefix = _folder_prefix(parts.path)
    paginator = boto3.client("s3").get_paginator("list_objects_v2")
    objects: dict[str, tuple[int, str]] = {}
    for page in paginator.paginate(Bucket=parts.netloc, Prefix=prefix):
        for item in page.get("Contents", ()):
            name = _relative(item["Key"], prefix)
            if name is not None:
                objects[name] = (int(item["Size"]), f"s3-etag:{item['ETag'].strip(chr(34))}")
    return Listing(uri, "S3 ETag", objects)


def list_gcs(uri: str) -> Listing:
    """objects.list over the prefix; md5Hash, or crc32c where a composite object has none."""
    storage = _require("google.cloud.storage", "google-cloud-storage")
    parts = urlsplit(uri)
    prefix = _folder_prefix(parts.path)
    blobs = storage.Client().list_blobs(
        parts.netloc, prefix=prefix, fields="items(name,size,md5Hash,crc32c),nextPageToken"
    )
    objects: dict[str, tuple[int, str]] = {}
    for blob in blobs:
        name = _relative(blob.name, prefix)
        if name is not None:
            identity = f"gcs-md5:{blob.md5_hash}" if blob.md5_hash else f"gcs-crc32c:{blob.crc32c}"
            objects[name] = (int(blob.size), identity)
    return Listing(uri, "GCS md5Hash/crc32c", objects)


def _azure_location(uri: str) -> tuple[str, str, str]:
    """(account URL, container, prefix) of an https://, wasbs:// or abfss:// blob URI."""
    parts = urlsplit(uri)
    if parts.scheme == "https":
        container, _, path = parts.path.lstrip("/").partition("/")
        return f"https://{parts.netloc}", container, _folder_prefix(path)
    container, _, host = parts.netloc.partition("@")
    account = host.split(".", 1)[0]
    return f"https://{account}.blob.core.windows.net", container, _folder_prefix(parts.path)


def list_azure_blob(uri: str, credential: Any = None, **options: Any) -> Listing:
    """List Blobs over the prefix; Content-MD5 where the blob has one, else its ETag. The
    credential is the job's identity (DefaultAzureCredential) unless one is given; with
    AZURE_STORAGE_CONNECTION_STRING set, that account's key instead. `options` go to the
    client (a transport)."""
    import os

    blob = _require("azure.storage.blob", "azure-storage-blob")
    account_url, container, prefix = _azure_location(uri)
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if credential is None and connection_string:
        service = blob.BlobServiceClient.from_connection_string(connection_string, **options)
    else:
        if credential is None:
            credential = _require("azure.identity", "azure-identity").DefaultAzureCredential()
        service = blob.BlobServiceClient(account_url, credential=credential, **options)
    objects: dict[str, tuple[int, str]] = {}
    for item in service.get_container_client(container).list_blobs(name_starts_with=prefix):
        name = _relative(item.name, prefix)
        if name is None:
            continue
        md5 = item.content_settings.content_md5
        identity = f"azure-md5:{_b64(md5)}" if md5 else f"azure-etag:{item.etag.strip(chr(34))}"
        objects[name] = (int(item.size), identity)
    return Listing(uri, "Azure Content-MD5/ETag", objects)


def list_uri(uri: str) -> Listing:
    """The listing of a data input's URI; ListingUnavailable when there is none to use."""
    scheme = uri.partition("://")[0]
    listers = {"s3": list_s3, "gs": list_gcs, "https": list_azure_blob}
    listers |= {"wasbs": list_azure_blob, "abfss": list_azure_blob}
    if scheme not in listers:
        raise ListingUnavailable(f"{scheme}:// inputs have no listing inflame can read")
    try:
        return listers[scheme](uri)
    except ListingUnavailable:
        raise
    except Exception as exc:  # credentials, permissions, network: the files get hashed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ListingUnavailable(
            f"listing {uri} failed ({type(exc).__name__}: {first[:200]})"
        ) from None


def _differences(listing: Listing, folder: Path) -> Iterator[str]:
    """Where the mounted folder and the listing disagree (names and sizes)."""
    mounted = {}
    for name, path in walk_files(folder):
        try:
            mounted[name] = Path(path).stat().st_size
        except OSError:
            mounted[name] = -1
    for name in sorted(mounted.keys() | listing.objects.keys()):
        listed = listing.objects.get(name)
        if listed is None:
            yield f"{name} is mounted but not listed"
        elif name not in mounted:
            yield f"{name} is listed but not mounted"
        elif mounted[name] != listed[0]:
            yield f"{name} has {mounted[name]} bytes mounted, {listed[0]} listed"


def adopt_listing(uri: str, folder: Path) -> str | None:
    """List `uri` and, when the mounted `folder` matches it, use its checksums for the
    folder. Returns None when adopted, else why not (the folder's files get hashed)."""
    try:
        listing = list_uri(uri)
    except ListingUnavailable as exc:
        return str(exc)
    differences = list(_differences(listing, folder))
    if differences:
        return (
            f"the listing of {uri} does not match the files in {folder} "
            f"({len(differences)} difference(s), e.g. {differences[0]})"
        )
    identities = {name: identity for name, (_, identity) in listing.objects.items()}
    _ADOPTED[folder.absolute()] = (identities, f"{listing.kind} from the listing of {uri}")
    return None


def forget_listings() -> None:
    _ADOPTED.clear()


def content_ids(folder: str | Path) -> tuple[dict[str, str], str]:
    """{relative name: identity} of every file below `folder` and where they came from:
    an adopted listing covering the folder, else the sha256 of every file (through this
    machine's fingerprint cache)."""
    folder = Path(folder).absolute()
    for root, (identities, source) in _ADOPTED.items():
        if folder == root:
            return dict(identities), source
        if folder.is_relative_to(root):
            below = _folder_prefix(folder.relative_to(root).as_posix())
            return {
                n[len(below) :]: i for n, i in identities.items() if n.startswith(below)
            }, source
    from inflame.fingerprint import FingerprintCache

    return tree_hashes(folder, cache=FingerprintCache.default()), SHA256

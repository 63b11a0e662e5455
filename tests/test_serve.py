"""`inflame serve`: the real service on a loopback port, called over HTTP. Answers match
`inflame predict` (also under concurrency, where requests share batches); every bad upload
is its own 4xx with a JSON error and the service stays healthy; tokens; metrics."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from inflame.hashing import sha256_file
from inflame.predict import Predictor
from tests.helpers import LiveService, assert_clean_error, run_inflame

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def trained(finished_run: Path) -> Path:
    return finished_run


@pytest.fixture(scope="module")
def images(trained: Path) -> list[Path]:
    manifest = json.loads((trained / "manifest.json").read_text())
    return sorted(Path(manifest["data"]["inputs"]["test"]["path"]).rglob("*.jpg"))


class Service(LiveService):
    """`inflame serve RUN --port 0 ...` in a subprocess."""

    def __init__(self, run: Path, cwd: Path, *args: str, **env: str):
        super().__init__(["serve", run, *args], cwd, **env)


@pytest.fixture(scope="module")
def service(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(
        trained,
        tmp_path_factory.mktemp("service"),
        "--max-upload-mb",
        "1",
        "--max-files",
        "6",
        "--max-wait-ms",
        "300",  # long enough that concurrent requests surely share batches
    )
    running.wait_ready()
    yield running
    running.stop()


def upload(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def direct(trained: Path, paths: list[Path], top_k: int | None = None) -> list[dict[str, Any]]:
    """What `inflame predict` answers, named by file name as the service names uploads."""
    answers = list(Predictor.from_run(trained).predict(paths, top_k=top_k))
    return [{**a, "image": Path(a["image"]).name} for a in answers]


def test_predictions_match_inflame_predict(service: Service, trained: Path, images: list[Path]):
    chosen = images[:5]
    answer = service.client.post("/predict", files=upload(*chosen), params={"top_k": 3})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert predictions == direct(trained, chosen, top_k=3)
    for item in predictions:  # the label is the most likely one
        assert item["label"] == max(item["top_k"], key=lambda r: r["probability"])["label"]
        assert item["probability"] == item["top_k"][0]["probability"]
    one = service.client.post("/predict", files=upload(chosen[0])).json()["predictions"]
    assert one == direct(trained, chosen[:1]) and "top_k" not in one[0]


def test_concurrent_requests_share_batches_and_each_gets_its_own_answers(
    service: Service, trained: Path, images: list[Path]
):
    requests = [[images[(i + j) % len(images)] for j in range(1 + i % 3)] for i in range(12)]
    expected = [direct(trained, chosen, top_k=2) for chosen in requests]
    before = _histogram(service, "inflame_batch_size")

    def call(chosen: list[Path]) -> Any:
        return service.client.post("/predict", files=upload(*chosen), params={"top_k": 2})

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(call, requests))
    assert [a.status_code for a in answers] == [200] * len(requests)
    assert [a.json()["predictions"] for a in answers] == expected
    after = _histogram(service, "inflame_batch_size")
    images_sent = sum(len(chosen) for chosen in requests)
    assert after["sum"] - before["sum"] == images_sent
    assert after["count"] - before["count"] < images_sent  # some images shared a pass


def _histogram(service: Service, name: str) -> dict[str, float]:
    text = service.client.get("/metrics").text
    found = dict(re.findall(rf"^{name}_(sum|count) (\S+)$", text, re.MULTILINE))
    return {key: float(value) for key, value in found.items()}


def _counter(service: Service, name: str) -> float:
    for line in service.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _jpeg(size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_every_bad_upload_is_a_4xx_with_a_json_error_and_the_service_stays_up(
    service: Service, tmp_path: Path
):
    good = _jpeg()
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 Mpx in a few kB
    cases: dict[str, tuple[dict[str, Any], int, str]] = {
        "not an image": (
            {"files": [("files", ("notes.txt", b"hello", "text/plain"))]},
            422,
            "notes.txt: not an image in a format inflame reads",
        ),
        "truncated": (
            {"files": [("files", ("cut.jpg", good[: len(good) // 2], "image/jpeg"))]},
            422,
            "cut.jpg: not a readable image",
        ),
        "bomb": (
            {"files": [("files", ("bomb.png", bomb.getvalue(), "image/png"))]},
            422,
            "decompression-bomb guard",
        ),
        "one bad among good": (
            {
                "files": [
                    ("files", ("a.jpg", good, "image/jpeg")),
                    ("files", ("b.gif", b"GIF8", "")),
                ]
            },
            422,
            "1 of 2 uploaded file(s) cannot be read as images, so nothing was labelled: b.gif",
        ),
        "too large": (
            {"files": [("files", ("big.jpg", b"\xff" * (1024 * 1024 + 1), "image/jpeg"))]},
            413,
            "larger than this service's limit of 1,048,576 bytes",
        ),
        "too many files": (
            {"files": [("files", (f"{i}.jpg", good, "image/jpeg")) for i in range(7)]},
            413,
            "More than 6 files in one request",
        ),
        "no files": (  # a multipart form with a field and no file
            {
                "content": b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n'
                b"--B--\r\n",
                "headers": {"content-type": "multipart/form-data; boundary=B"},
            },
            400,
            "The request holds no files",
        ),
        "not multipart": ({"content": b"raw"}, 400, "multipart/form-data"),
        "top_k 0": (
            {"files": [("files", ("a.jpg", good, "image/jpeg"))], "params": {"top_k": 0}},
            422,
            "top_k: Input should be greater than or equal to 1",
        ),
    }
    for name, (request, status, fragment) in cases.items():
        answer = service.client.post("/predict", **request)
        assert answer.status_code == status, (name, answer.text)
        assert fragment in answer.json()["error"], (name, answer.text)
        assert service.client.get("/healthz").json() == {"status": "ok"}
    # a chunked upload (no Content-Length) is cut off as soon as it passes the limit: the
    # 413 goes out and the connection closes, so the client may see either
    refused = _counter(service, 'inflame_errors_total{reason="upload_too_large"}')
    head = b'--B\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n\r\n'
    chunks = (head if i == 0 else b"x" * 65536 for i in range(40))
    try:
        answer = service.client.post(
            "/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=B"}
        )
        assert answer.status_code == 413, answer.text
    except httpx.TransportError:
        pass
    assert _counter(service, 'inflame_errors_total{reason="upload_too_large"}') == refused + 1
    fine = service.client.post("/predict", files=[("files", ("ok.jpg", good, "image/jpeg"))])
    assert fine.status_code == 200 and fine.json()["predictions"][0]["image"] == "ok.jpg"


def test_health_checks_answer_while_predictions_run(service: Service, images: list[Path]):
    done = threading.Event()
    health: list[int] = []
    answered: list[int] = []

    def call(_: int) -> None:
        answered.append(service.client.post("/predict", files=upload(*images[:6])).status_code)

    def load() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(24)))
        done.set()

    threading.Thread(target=load).start()
    while not done.is_set():
        health.append(service.client.get("/healthz", timeout=5).status_code)
    assert answered == [200] * 24
    assert len(health) > 3 and set(health) == {200}


def test_metadata_and_metrics_describe_the_run(service: Service, trained: Path):
    metadata = service.client.get("/metadata").json()
    model = json.loads((trained / "model" / "model.json").read_text())
    assert metadata["classes"] == model["classes"] and len(metadata["classes"]) == 3
    assert metadata["architecture"] == "resnet18"
    assert metadata["preprocessing"] == model["preprocessing"]
    assert metadata["weights_sha256"] == sha256_file(trained / "model" / "weights.safetensors")
    assert metadata["run"]["name"] == trained.name and metadata["run"]["job"] == "served"
    assert metadata["limits"]["max_files"] == 6
    docs = service.client.get("/openapi.json").json()
    assert "multipart/form-data" in docs["paths"]["/predict"]["post"]["requestBody"]["content"]
    metrics = service.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert re.search(r'inflame_http_requests_total\{route="/metadata",status="200"\}', metrics.text)
    assert "inflame_http_request_duration_seconds_bucket" in metrics.text


def test_a_token_guards_everything_but_health(trained: Path, tmp_path: Path, images: list[Path]):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    service = Service(trained, tmp_path, "--token-file", str(token_file), "--workers", "2")
    try:
        good = {"Authorization": f"Bearer {TOKEN}"}
        service.wait_ready()  # /readyz is open, for load balancers' probes
        files = upload(images[0])
        assert service.client.post("/predict", files=files).status_code == 401
        wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}
        refused = service.client.post("/predict", files=files, headers=wrong)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer TOKEN" in refused.json()["error"]
        assert service.client.get("/metadata").status_code == 401
        assert service.client.get("/metrics").status_code == 401
        assert service.client.get("/healthz").status_code == 200
        # both worker processes answer with the model (each loads it)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answers = [service.client.post("/predict", files=files, headers=good) for _ in range(6)]
            if all(a.status_code == 200 for a in answers):
                break
            time.sleep(0.2)
        assert answers[0].json()["predictions"] == direct(trained, images[:1])
    finally:
        service.stop()


def test_listening_beyond_loopback_needs_a_token(trained: Path, tmp_path: Path):
    result = run_inflame("serve", trained, "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    assert_clean_error(result, "--host 0.0.0.0", "an API token is required", "INFLAME_API_TOKEN")
    short = run_inflame("serve", trained, "--port", "0", cwd=tmp_path, INFLAME_API_TOKEN="short")
    assert_clean_error(short, "at least 16 printable ASCII characters")


def test_a_run_whose_model_changed_is_refused_before_binding(trained: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    weights = copy / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    result = run_inflame("serve", copy, "--port", "0", cwd=tmp_path)
    assert_clean_error(result, "has changed since the run finished")
    assert "inflame serve:" not in result.stderr  # never started listening


def test_the_batcher_groups_what_waits_and_a_failure_reaches_each_item_of_its_batch():
    from inflame.serving.batcher import Batcher

    gate, seen = threading.Event(), []

    def work(items: list[int]) -> list[int]:
        seen.append(list(items))
        gate.wait(30)
        if 13 in items:
            raise ValueError("unlucky")
        return [item * 2 for item in items]

    batcher = Batcher(work, max_batch=3, max_wait=0.0, on_batch=lambda n: None)
    [first] = batcher.submit([1])
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:  # the worker holds batch [1]
        time.sleep(0.01)
    rest = batcher.submit([2, 3, 4, 5, 13])
    gate.set()
    assert first.result(30) == 2
    assert [f.result(30) for f in rest[:3]] == [4, 6, 8]
    for future in rest[3:]:
        with pytest.raises(ValueError, match="unlucky"):
            future.result(30)
    batcher.close()
    assert seen == [[1], [2, 3, 4], [5, 13]]


def test_a_request_that_gave_up_does_not_stop_the_batcher():
    """A cancelled future (its client went away) is dropped from its batch; the worker
    serves the next ones."""
    from inflame.serving.batcher import Batcher

    gate, seen = threading.Event(), []

    def work(items: list[int]) -> list[int]:
        seen.append(list(items))
        gate.wait(30)
        return [item + 1 for item in items]

    batcher = Batcher(work, max_batch=8, max_wait=0.0)
    [first] = batcher.submit([0])
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    gone, kept = batcher.submit([1, 2])
    assert gone.cancel()
    gate.set()
    assert first.result(30) == 1 and kept.result(30) == 3
    [later] = batcher.submit([5])
    assert later.result(30) == 6
    batcher.close()
    assert seen == [[0], [2], [5]] and batcher.failed is None


def test_serve_without_its_packages_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    from inflame.errors import InflameError
    from inflame.serving.server import require_service_packages

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name)
    )
    with pytest.raises(InflameError, match=r"\(uvicorn\): `pip install 'inflame\[serve\]'`"):
        require_service_packages()


def test_the_onnx_backend_serves_the_same_answers(
    trained: Path, tmp_path: Path, images: list[Path]
):
    from inflame.exporting import export_run

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    refused = run_inflame("serve", run, "--port", "0", "--backend", "onnx", cwd=tmp_path)
    assert_clean_error(refused, "has no ONNX export")
    export_run(run, "onnx")
    service = Service(run, tmp_path, "--backend", "onnx")
    try:
        service.wait_ready()
        assert service.client.get("/metadata").json()["backend"] == "onnx"
        answer = service.client.post("/predict", files=upload(*images), params={"top_k": 3})
        assert answer.status_code == 200, answer.text
        expected = direct(trained, images, top_k=3)
        for mine, theirs in zip(answer.json()["predictions"], expected, strict=True):
            assert (mine["image"], mine["label"]) == (theirs["image"], theirs["label"])
            for a, b in zip(mine["top_k"], theirs["top_k"], strict=True):
                assert a["label"] == b["label"]
                assert a["probability"] == pytest.approx(b["probability"], abs=2e-4)
    finally:
        service.stop()


def test_the_listening_socket_says_tcp_so_responses_are_not_delayed():
    """asyncio turns Nagle off (TCP_NODELAY) only on sockets whose protocol says TCP; with
    proto 0, every response on a kept-alive connection waited ~40 ms for a delayed ACK
    (benchmarks/serve_load.py: 17 instead of 66 requests/s for one client)."""
    import socket

    from inflame.serving.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname()[:2])
        accepted, _ = sock.accept()
        assert accepted.proto == socket.IPPROTO_TCP
        accepted.close()
        client.close()
    finally:
        sock.close()

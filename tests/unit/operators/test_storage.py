"""SavePredictionOutputsOperator and the hook's downloads, against the emulator and real file hosts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath
from PIL import Image

from airflow_provider_cometapi.emulator import EmulatorProcess
from airflow_provider_cometapi.exceptions import CometAPIError, DestinationNotWritableError, OutputExpiredError
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from tests.fixtures import FAST_RETRIES, set_connection

SCHNELL = "black-forest-labs/flux-schnell"


def finished(model: str = SCHNELL, **model_input) -> str:
    """A succeeded prediction's id (Prefer: wait makes it finish within the create call)."""
    control = model_input.pop("_emulator", {})
    model_input.setdefault("prompt", "a lighthouse")
    prediction = CometAPIHook().create_prediction(
        model, {**model_input, "_emulator": {"duration": 0.1, **control}}, wait=10
    )
    assert prediction.succeeded
    return prediction.id


def save(prediction_id: str, destination, **kwargs) -> list[str]:
    operator = SavePredictionOutputsOperator(
        task_id="store", prediction_id=prediction_id, destination=destination, **kwargs
    )
    operator.hook._retry_policy = FAST_RETRIES
    return operator.execute({})


def files_in(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_stores_images_and_a_sidecar(cometapi_conn, tmp_path):
    prediction_id = finished(num_outputs=2, output_format="png", aspect_ratio="16:9", seed=42)
    uris = save(prediction_id, tmp_path.as_uri())
    assert files_in(tmp_path) == [f"{prediction_id}.json", f"{prediction_id}_0.png", f"{prediction_id}_1.png"]
    assert uris == [
        (tmp_path / name).as_uri()
        for name in (f"{prediction_id}_0.png", f"{prediction_id}_1.png", f"{prediction_id}.json")
    ]
    with Image.open(tmp_path / f"{prediction_id}_0.png") as image:
        assert image.format == "PNG"
        assert image.width > image.height
    sidecar = json.loads((tmp_path / f"{prediction_id}.json").read_text())
    assert sidecar["id"] == prediction_id
    assert sidecar["model"] == SCHNELL
    assert sidecar["input"]["prompt"] == "a lighthouse"
    assert sidecar["input"]["seed"] == 42
    assert sidecar["metrics"]["image_count"] == 2
    assert sidecar["completed_at"]
    assert len(sidecar["source_urls"]) == 2
    assert sidecar["stored"] == uris[:2]


def test_single_string_output_and_extension_from_content_type(cometapi_conn, tmp_path):
    prediction_id = finished("black-forest-labs/flux-1.1-pro", output_format="jpg")
    save(prediction_id, ObjectStoragePath(tmp_path.as_uri()))
    assert files_in(tmp_path) == [f"{prediction_id}.json", f"{prediction_id}_0.jpg"]


def test_data_uri_outputs_are_decoded(cometapi_conn, tmp_path):
    prediction_id = finished(output_format="webp", _emulator={"data_uri": True})
    save(prediction_id, tmp_path.as_uri(), write_sidecar=False)
    assert files_in(tmp_path) == [f"{prediction_id}_0.webp"]
    with Image.open(tmp_path / f"{prediction_id}_0.webp") as image:
        assert image.format == "WEBP"
    assert cometapi_conn.stats(detail=False)["file_downloads"] == 0


def test_rerun_replaces_files_instead_of_adding_more(cometapi_conn, tmp_path):
    prediction_id = finished()
    first = save(prediction_id, tmp_path.as_uri())
    before = files_in(tmp_path)
    assert save(prediction_id, tmp_path.as_uri()) == first
    assert files_in(tmp_path) == before


def test_creates_missing_folders(cometapi_conn, tmp_path):
    prediction_id = finished()
    save(prediction_id, (tmp_path / "a" / "b").as_uri())
    assert (tmp_path / "a" / "b" / f"{prediction_id}_0.webp").exists()


def test_interrupted_download_is_retried_and_leaves_no_partial_file(cometapi_conn, tmp_path):
    prediction_id = finished()
    cometapi_conn.add_fault(kind="reset", route="files", count=1)
    save(prediction_id, tmp_path.as_uri())
    assert files_in(tmp_path) == [f"{prediction_id}.json", f"{prediction_id}_0.webp"]
    assert cometapi_conn.stats(detail=False)["faults_served"] == 1


def test_persistently_interrupted_download_leaves_nothing(cometapi_conn, tmp_path):
    prediction_id = finished()
    cometapi_conn.add_fault(kind="reset", route="files", count=-1)
    with pytest.raises(CometAPIError):
        save(prediction_id, tmp_path.as_uri())
    assert files_in(tmp_path) == []


def test_file_host_404_means_expired(cometapi_conn, tmp_path):
    prediction_id = finished()
    cometapi_conn.add_fault(kind="error", route="files", status=404, envelope="html", count=-1)
    with pytest.raises(OutputExpiredError, match="expire about an hour"):
        save(prediction_id, tmp_path.as_uri())
    assert files_in(tmp_path) == []


def test_data_removed_fails_clearly(monkeypatch, tmp_path):
    with EmulatorProcess(extra_args=["--output-ttl", "0.2"]) as emulator:
        set_connection(monkeypatch, emulator.connection_dict())
        prediction_id = finished()
        time.sleep(0.5)
        with pytest.raises(OutputExpiredError, match="expired"):
            save(prediction_id, tmp_path.as_uri())


def test_unfinished_prediction_is_refused(cometapi_conn, tmp_path):
    prediction_id = CometAPIHook().create_prediction(SCHNELL, {"prompt": "x", "_emulator": {"outcome": "never"}}).id
    with pytest.raises(CometAPIError, match="nothing to store"):
        save(prediction_id, tmp_path.as_uri())


def test_unwritable_destination_fails_before_downloading(cometapi_conn, tmp_path):
    prediction_id = finished()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DestinationNotWritableError, match="Cannot write to the destination .*Choose a `destination`"):
        save(prediction_id, (blocker / "sub").as_uri())
    stats = cometapi_conn.stats(detail=False)
    assert stats["file_downloads"] == 0
    assert stats["polls"] == 0  # found before asking CometAPI anything


class _RecordingFileHost(BaseHTTPRequestHandler):
    seen_headers: list[dict[str, str]] = []

    def do_GET(self):
        type(self).seen_headers.append(dict(self.headers))
        body = b"\x89PNG\r\n\x1a\n" + b"0" * 100
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingFileHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RecordingFileHost.seen_headers = []
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_key_is_never_sent_to_another_file_host(cometapi_conn, file_host, tmp_path):
    hook = CometAPIHook()
    body = hook.stream_output(f"{file_host}/delivery/out-0.png", lambda stream: b"".join(stream.chunks))
    assert body
    (headers,) = _RecordingFileHost.seen_headers
    assert "Authorization" not in headers
    assert cometapi_conn.api_key not in json.dumps(headers)


def test_file_host_403_means_expired_not_a_bad_key(cometapi_conn, tmp_path):
    prediction_id = finished()
    cometapi_conn.add_fault(kind="error", route="files", status=403, envelope="html", count=-1)
    with pytest.raises(OutputExpiredError, match="HTTP 403"):
        save(prediction_id, tmp_path.as_uri())

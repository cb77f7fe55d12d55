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
from airflow_provider_cometapi.exceptions import (
    CometAPIError,
    DestinationNotWritableError,
    InvalidDestinationError,
    InvalidPredictionIdError,
    OutputExpiredError,
    OutputTooLargeError,
    PredictionNotStorableError,
)
from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator, prediction_id_of
from tests.fixtures import FAST_RETRIES, TaskInstance, set_connection

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


class RecordingTaskInstance(TaskInstance):
    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def save(prediction_id, destination, ti: TaskInstance | None = None, **kwargs) -> list[str]:
    operator = SavePredictionOutputsOperator(
        task_id="store", prediction_id=prediction_id, destination=destination, **kwargs
    )
    operator.hook._retry_policy = FAST_RETRIES
    return operator.execute({"ti": ti or TaskInstance()})


def files_in(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_stores_images_and_a_sidecar(cometapi_conn, tmp_path):
    prediction_id = finished(num_outputs=2, output_format="png", aspect_ratio="16:9", seed=42)
    ti = RecordingTaskInstance()
    uris = save(prediction_id, tmp_path.as_uri(), ti=ti)
    assert files_in(tmp_path) == [f"{prediction_id}.json", f"{prediction_id}_0.png", f"{prediction_id}_1.png"]
    # The return value is the images alone; the metadata has XComs of its own.
    assert uris == [(tmp_path / name).as_uri() for name in (f"{prediction_id}_0.png", f"{prediction_id}_1.png")]
    assert ti.xcoms == {"prediction_id": prediction_id, "sidecar": (tmp_path / f"{prediction_id}.json").as_uri()}
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
    assert sidecar["stored"] == uris


def test_single_string_output_and_extension_from_content_type(cometapi_conn, tmp_path):
    prediction_id = finished("black-forest-labs/flux-1.1-pro", output_format="jpg")
    save(prediction_id, ObjectStoragePath(tmp_path.as_uri()))
    assert files_in(tmp_path) == [f"{prediction_id}.json", f"{prediction_id}_0.jpg"]


def test_data_uri_outputs_are_decoded(cometapi_conn, tmp_path):
    prediction_id = finished(output_format="webp", _emulator={"data_uri": True})
    ti = RecordingTaskInstance()
    save(prediction_id, tmp_path.as_uri(), ti=ti, write_sidecar=False)
    assert files_in(tmp_path) == [f"{prediction_id}_0.webp"]
    assert ti.xcoms["sidecar"] is None
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
    with pytest.raises(PredictionNotStorableError, match="nothing to store"):
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


# --- Destinations checked before anything is asked -------------------------------------------


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("", "is empty"),
        ("images", "relative path"),
        ("file://images", "three slashes"),
        (42, "not int 42"),
        (None, "not NoneType None"),
        ("memory://images", "vanish when the task ends"),
    ],
    ids=repr,
)
def test_a_destination_that_cannot_work_fails_at_dag_parse(destination, message):
    with pytest.raises(InvalidDestinationError, match=message):
        SavePredictionOutputsOperator(task_id="store", prediction_id="abc", destination=destination)


def test_a_templated_destination_is_checked_before_any_request(cometapi_conn, tmp_path):
    operator = SavePredictionOutputsOperator(
        task_id="store", prediction_id=finished(), destination="{{ params.folder }}/images"
    )
    before = cometapi_conn.stats(detail=False)
    operator.destination = "images/2026-12-01"  # as Airflow renders it: relative to the worker's folder
    with pytest.raises(InvalidDestinationError, match="relative path"):
        operator.execute({"ti": TaskInstance()})
    after = cometapi_conn.stats(detail=False)
    assert (after["polls"], after["creates"], after["file_downloads"]) == (
        before["polls"],
        before["creates"],
        before["file_downloads"],
    )
    assert after["requests"] == before["requests"]


@pytest.mark.parametrize("destination", ["memory://images", 42, None, "", "relative/images"], ids=repr)
def test_a_destination_given_at_run_time_is_checked_before_any_request(cometapi_conn, destination):
    operator = SavePredictionOutputsOperator(task_id="store", prediction_id="abc", destination="{{ x }}")
    operator.destination = destination
    with pytest.raises(InvalidDestinationError):
        operator.execute({"ti": TaskInstance()})
    assert cometapi_conn.stats(detail=False)["requests"] == 0


def test_stale_partial_files_are_removed_and_the_final_file_is_whole(cometapi_conn, tmp_path):
    prediction_id = finished(output_format="png")
    stale = [f".{prediction_id}_0.png.partial-0123456789abcdef0123456789abcdef", f".{prediction_id}.json.partial-ab"]
    for name in stale:
        (tmp_path / name).write_bytes(b"half a file from a killed run")
    (tmp_path / ".another_0.png.partial-ab").write_bytes(b"not this prediction's")
    save(prediction_id, tmp_path.as_uri())
    assert files_in(tmp_path) == [".another_0.png.partial-ab", f"{prediction_id}.json", f"{prediction_id}_0.png"]
    with Image.open(tmp_path / f"{prediction_id}_0.png") as image:
        image.verify()


@pytest.fixture
def small_outputs(cometapi_conn, monkeypatch):
    """A second connection to the emulator allowing outputs of at most 1000 bytes."""
    set_connection(
        monkeypatch, {**cometapi_conn.connection_dict(), "extra": {"max_output_bytes": 1000}}, "cometapi_small"
    )
    return "cometapi_small"


def test_an_output_over_max_output_bytes_leaves_nothing(cometapi_conn, small_outputs, tmp_path):
    prediction_id = finished(output_format="png")
    with pytest.raises(OutputTooLargeError, match="more than the 1,000 bytes .*max_output_bytes") as caught:
        save(prediction_id, tmp_path.as_uri(), cometapi_conn_id=small_outputs)
    assert caught.value.limit == 1000
    assert caught.value.url.startswith(cometapi_conn.base_url)
    assert "?" not in caught.value.url
    assert files_in(tmp_path) == []


def test_a_data_uri_over_max_output_bytes_leaves_nothing(cometapi_conn, small_outputs, tmp_path):
    prediction_id = finished(output_format="png", _emulator={"data_uri": True})
    with pytest.raises(OutputTooLargeError, match="max_output_bytes"):
        save(prediction_id, tmp_path.as_uri(), cometapi_conn_id=small_outputs)
    assert files_in(tmp_path) == []


# --- prediction_id: an id, a prediction, or the XComArg of either -----------------------------


def test_prediction_id_takes_the_create_tasks_output_as_it_is(cometapi_conn, tmp_path):
    """The dict a create task or @task.cometapi returns (what its XComArg resolves to), or its id."""
    prediction = CometAPIHook().create_prediction(SCHNELL, {"prompt": "x", "_emulator": {"duration": 0.1}}, wait=10)
    for form in (prediction.to_dict(), prediction, prediction.id, f"  {prediction.id}\n"):
        folder = tmp_path / type(form).__name__
        assert save(form, folder.as_uri()) == [(folder / f"{prediction.id}_0.webp").as_uri()]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"status": "succeeded"}, "dict without an 'id'"),
        ({"id": "../etc"}, "Invalid prediction id"),
        ({"id": 42}, "Invalid prediction id 42"),
        ([{"id": "abc"}, {"id": "def"}], "2 values, not one prediction.*expand"),
        ("", "Invalid prediction id"),
        (None, "Invalid prediction id None"),
    ],
    ids=repr,
)
def test_a_prediction_id_that_cannot_be_one_fails_before_any_request(cometapi_conn, tmp_path, value, message):
    with pytest.raises(InvalidPredictionIdError, match=message):
        prediction_id_of(value)
    operator = SavePredictionOutputsOperator(task_id="store", prediction_id="{{ x }}", destination=tmp_path.as_uri())
    operator.prediction_id = value  # as Airflow resolves it
    with pytest.raises(InvalidPredictionIdError, match=message):
        operator.execute({"ti": TaskInstance()})
    assert cometapi_conn.stats(detail=False)["requests"] == 0


def test_a_plain_string_id_is_checked_at_dag_parse(tmp_path):
    with pytest.raises(InvalidPredictionIdError):
        SavePredictionOutputsOperator(task_id="store", prediction_id="not an id!", destination=tmp_path.as_uri())
    # Templates and XComArgs are only known at run time.
    SavePredictionOutputsOperator(task_id="store", prediction_id="{{ params.id }}", destination=tmp_path.as_uri())


def test_prediction_id_of_a_prediction_object():
    prediction = Prediction.from_api({"id": "abc123", "status": "succeeded", "output": []})
    assert prediction_id_of(prediction) == "abc123"


def test_the_sidecar_and_the_asset_events_carry_the_cost(emulator, monkeypatch, tmp_path):

    from airflow.sdk import Asset

    prices = {"extra": {"prices": {SCHNELL: 0.003}, "currency": "EUR"}}
    set_connection(monkeypatch, {**emulator.connection_dict(), **prices})
    prediction_id = finished(num_outputs=2)
    outlet = Asset("file:///images")
    from tests.unit.operators.test_prediction_cost import OutletEvents

    events = OutletEvents()
    operator = SavePredictionOutputsOperator(
        task_id="store", prediction_id=prediction_id, destination=tmp_path.as_uri(), outlets=[outlet]
    )
    operator.execute({"ti": TaskInstance(), "outlet_events": events})
    sidecar = json.loads((tmp_path / f"{prediction_id}.json").read_text())
    assert (sidecar["images"], sidecar["cost"], sidecar["currency"]) == (2, 0.006, "EUR")
    assert (events[outlet].extra["cost"], events[outlet].extra["currency"]) == (0.006, "EUR")


def test_without_a_price_the_sidecar_says_the_cost_is_unknown(cometapi_conn, tmp_path):
    prediction_id = finished()
    save(prediction_id, tmp_path.as_uri())
    sidecar = json.loads((tmp_path / f"{prediction_id}.json").read_text())
    assert (sidecar["images"], sidecar["cost"], sidecar["currency"]) == (1, None, "USD")

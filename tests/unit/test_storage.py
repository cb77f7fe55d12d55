"""storage.py on its own: destination checks, names, the allow-list, path containment, atomic writes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import PurePosixPath

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_cometapi.exceptions import (
    DestinationNotWritableError,
    InvalidDestinationError,
    InvalidParameterError,
    OutputTooLargeError,
    UnsafeOutputPathError,
)
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.responses import OutputStream, bounded_chunks, data_output
from airflow_provider_cometapi.storage import (
    check_destination,
    contained_path,
    destination_folder,
    extension_for,
    output_name,
    partial_name,
    prepare_destination,
    remove_stale_partials,
    sidecar_metadata,
    sidecar_name,
    store_output,
    store_sidecar,
)

PID = "r8x2k4m9n1p3q5s7t0v6w8y2z4"
PYTHON = "data:text/x-python;base64," + base64.b64encode(b"import os\nos.system('id')\n").decode()


def folder(path) -> ObjectStoragePath:
    return ObjectStoragePath(path.as_uri())


def stream(body: bytes, media_type: str = "image/png", url: str = "https://files.example/out-0.png") -> OutputStream:
    return OutputStream(url=url, media_type=media_type, length=len(body), chunks=iter([body]))


def names(path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


# --- Extensions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_type", "url", "expected"),
    [
        ("image/webp", "https://x/out-0.webp", "webp"),
        ("image/jpeg; charset=binary", "https://x/out-0", "jpg"),
        ("IMAGE/PNG", "https://x/out-0", "png"),
        ("image/avif", "https://x/out-0", "avif"),
        ("video/mp4", "https://x/out-0", "mp4"),
        ("video/quicktime", "https://x/out-0", "mov"),
        ("audio/mpeg", "https://x/out-0", "mp3"),
        ("audio/x-wav", "https://x/out-0", "wav"),
        # A generic type lets an allowed URL suffix tell, and only an allowed one.
        ("application/octet-stream", "https://x/out-0.png", "png"),
        ("binary/octet-stream", "https://x/out-0.JPEG", "jpg"),
        ("", "https://x/out-0.tif", "tiff"),
        ("", "https://x/out-0", "bin"),
        ("", "https://x/.png", "bin"),
        ("application/octet-stream", "https://x/evil.py", "bin"),
        ("", "https://x/evil.sh", "bin"),
        ("", "https://x/page.html", "bin"),
        # A type that is not generic decides alone, whatever the URL says.
        ("text/html", "https://x/out-0.png", "bin"),
        ("text/x-python", "https://x/out-0.py", "bin"),
        ("application/x-sh", "https://x/out-0.sh", "bin"),
        ("image/svg+xml", "https://x/out-0.svg", "bin"),
        ("text/plain", "https://x/out-0.txt", "bin"),
        ("application/json", "https://x/out-0.json", "bin"),
        # A data: URI has no suffix to read.
        ("", "data:,...(9 chars)", "bin"),
    ],
)
def test_extension_comes_from_the_allow_list(media_type, url, expected):
    assert extension_for(media_type, url) == expected


def test_an_executable_data_uri_is_stored_as_bin(tmp_path):
    stored = store_output(data_output(PYTHON, limit=1024), folder(tmp_path), PID, 0)
    assert stored.name == f"{PID}_0.bin"
    assert names(tmp_path) == [f"{PID}_0.bin"]
    assert (tmp_path / f"{PID}_0.bin").read_bytes() == b"import os\nos.system('id')\n"


# --- Names -----------------------------------------------------------------------------------


def test_names():
    assert output_name(PID, 0, "image/webp") == f"{PID}_0.webp"
    assert output_name("a-b_c", 12, "video/mp4") == "a-b_c_12.mp4"
    assert sidecar_name(PID) == f"{PID}.json"
    temporary = partial_name(f"{PID}_0.webp")
    assert temporary.startswith(f".{PID}_0.webp.partial-")
    assert temporary != partial_name(f"{PID}_0.webp")  # two runs never share a temporary file


BAD_IDS = [
    "../../dags/evil",
    "/etc/cron.d/evil",
    "a/b",
    "a\\b",
    "..",
    ".hidden",
    "",
    " abc",
    "abc\n",
    "abc\x00",
    "évil",
    "x" * 129,
    None,
    42,
]


@pytest.mark.parametrize("prediction_id", BAD_IDS, ids=repr)
def test_a_name_is_built_only_from_a_prediction_id(prediction_id):
    with pytest.raises(UnsafeOutputPathError, match="not a prediction id"):
        output_name(prediction_id, 0, "image/png")
    with pytest.raises(UnsafeOutputPathError, match="not a prediction id"):
        sidecar_name(prediction_id)


@pytest.mark.parametrize("index", [-1, True, "0", 1.0, None])
def test_an_index_is_a_whole_number(index):
    with pytest.raises(UnsafeOutputPathError, match="index"):
        output_name(PID, index, "image/png")


@pytest.mark.parametrize("prediction_id", ["../../dags/evil", "/tmp/evil", "a/../../b"])
def test_traversal_ids_write_nothing_anywhere(tmp_path, prediction_id):
    destination = tmp_path / "images"
    destination.mkdir()
    with pytest.raises(UnsafeOutputPathError):
        store_output(data_output(PYTHON, limit=1024), folder(destination), prediction_id, 0)
    with pytest.raises(UnsafeOutputPathError):
        store_sidecar({"id": prediction_id}, folder(destination), prediction_id)
    assert [str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")] == ["images"]


# --- Containment -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "a/b.png", "..", ".", "", "x\x00.png", "x.png\n"])
def test_contained_path_refuses_anything_but_a_plain_name(tmp_path, name):
    with pytest.raises(UnsafeOutputPathError, match="not a plain file name"):
        contained_path(folder(tmp_path), name)


def test_a_link_at_the_final_name_pointing_outside_is_refused(tmp_path):
    destination, outside = tmp_path / "images", tmp_path / "dags"
    destination.mkdir()
    outside.mkdir()
    (destination / f"{PID}_0.png").symlink_to(outside / "evil.png")
    (destination / f"{PID}_1.png").symlink_to(outside)  # a folder: a move would land inside it
    for index in (0, 1):
        with pytest.raises(UnsafeOutputPathError, match="not directly in"):
            store_output(stream(b"\x89PNG"), folder(destination), PID, index)
    assert names(outside) == []
    assert names(destination) == [f"{PID}_0.png", f"{PID}_1.png"]  # the links, and no temporary file


def test_a_destination_that_is_itself_a_link_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    stored = store_output(stream(b"\x89PNG"), folder(tmp_path / "linked"), PID, 0)
    assert stored.name == f"{PID}_0.png"
    assert (real / f"{PID}_0.png").read_bytes() == b"\x89PNG"


def test_a_link_inside_the_destination_is_replaced_not_followed(tmp_path):
    (tmp_path / "other.png").write_bytes(b"keep me")
    (tmp_path / f"{PID}_0.png").symlink_to(tmp_path / "other.png")
    store_output(stream(b"new"), folder(tmp_path), PID, 0)
    assert not (tmp_path / f"{PID}_0.png").is_symlink()
    assert (tmp_path / f"{PID}_0.png").read_bytes() == b"new"
    assert (tmp_path / "other.png").read_bytes() == b"keep me"


def test_object_store_keys_stay_under_the_prefix():
    directory = ObjectStoragePath("memory://bucket/images/2026-12-01")
    assert contained_path(directory, f"{PID}_0.png").path == f"/bucket/images/2026-12-01/{PID}_0.png"
    with pytest.raises(UnsafeOutputPathError):
        contained_path(directory, "../../other/x.png")


@pytest.fixture
def memory_store(monkeypatch):
    """An in-memory store standing in for an object store (Airflow registers none for memory://)."""
    from airflow.sdk.io import store
    from fsspec.implementations.memory import MemoryFileSystem

    monkeypatch.setitem(store._STORE_CACHE, "memory", store.ObjectStore("memory", None, fs=MemoryFileSystem()))


def test_object_store_write_goes_through_a_temporary_object(memory_store):
    directory = ObjectStoragePath("memory://cometapi-storage-test/images")
    stored = store_output(stream(b"\x89PNG"), directory, PID, 0)
    assert stored.read_bytes() == b"\x89PNG"
    assert sorted(entry.name for entry in directory.iterdir()) == [f"{PID}_0.png"]


# --- Atomic writes ---------------------------------------------------------------------------


def test_a_broken_stream_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    (tmp_path / f"{PID}_0.png").write_bytes(b"previous complete file")

    def broken():
        yield b"first half"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):  # the source's own error, not a storage one
        store_output(OutputStream("https://x/o.png", "image/png", None, broken()), folder(tmp_path), PID, 0)
    assert names(tmp_path) == [f"{PID}_0.png"]
    assert (tmp_path / f"{PID}_0.png").read_bytes() == b"previous complete file"


def test_an_output_over_the_limit_leaves_nothing(tmp_path):
    chunks = bounded_chunks(iter([b"x" * 600, b"x" * 600]), url="https://x/o.png", announced=None, limit=1000)
    with pytest.raises(OutputTooLargeError, match="max_output_bytes"):
        store_output(OutputStream("https://x/o.png", "image/png", None, chunks), folder(tmp_path), PID, 0)
    assert names(tmp_path) == []


def test_a_folder_at_the_final_name_fails_as_not_writable(tmp_path):
    (tmp_path / f"{PID}_0.png").mkdir()
    with pytest.raises(DestinationNotWritableError, match=f"Could not write .*{PID}_0.png"):
        store_output(stream(b"\x89PNG"), folder(tmp_path), PID, 0)
    assert names(tmp_path) == [f"{PID}_0.png"]


def test_the_sidecar_is_written_the_same_way(tmp_path):
    stored = store_sidecar({"id": PID, "b": 1}, folder(tmp_path), PID)
    assert stored.name == f"{PID}.json"
    assert json.loads((tmp_path / f"{PID}.json").read_text()) == {"id": PID, "b": 1}
    assert names(tmp_path) == [f"{PID}.json"]


# --- Stale temporary files -------------------------------------------------------------------


def test_stale_partials_of_these_predictions_are_removed_and_nothing_else(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    destination = tmp_path / "images"
    destination.mkdir()
    ours = [
        f".{PID}_0.webp.partial-0123456789abcdef0123456789abcdef",  # what every release wrote
        f".{PID}_12.png.partial",
        f".{PID}.json.partial-deadbeef",
        f".{PID}_1.bin.partial-cafe",
    ]
    kept = [
        f"{PID}_0.webp",
        f".{PID}_x_0.png.partial-beef",  # another prediction, whose id starts with ours
        f".{PID}-2_0.png.partial-beef",
        ".other_0.png.partial-beef",
        f".{PID}_0.webp.partial-NOTHEX",
        "notes.txt",
    ]
    for name in ours[:-1] + kept:
        (destination / name).write_bytes(b"x")
    (destination / ours[-1]).symlink_to(outside)
    removed = remove_stale_partials(folder(destination), [PID])
    assert sorted(removed) == sorted(ours)
    assert names(destination) == sorted(kept)
    assert outside.read_text() == "not ours"  # a link is removed, not what it points to


def test_stale_partials_of_many_predictions_in_one_listing(tmp_path):
    for pid in ("aaa", "bbb", "ccc"):
        (tmp_path / f".{pid}_0.png.partial-00").write_bytes(b"x")
    assert sorted(remove_stale_partials(folder(tmp_path), ["aaa", "bbb"])) == [
        ".aaa_0.png.partial-00",
        ".bbb_0.png.partial-00",
    ]
    assert names(tmp_path) == [".ccc_0.png.partial-00"]
    assert remove_stale_partials(folder(tmp_path / "missing"), ["aaa"]) == []
    with pytest.raises(UnsafeOutputPathError):
        remove_stale_partials(folder(tmp_path), ["../x"])


# --- Destinations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("images", "relative path"),
        ("./images", "relative path"),
        ("~/images", "relative path"),
        ("file://images", "three slashes"),
        ("file://localhost/data/images", "relative path"),
        (42, "not int 42"),
        (None, "not NoneType None"),
        (b"/data", "not bytes"),
        (["/data"], "not list"),
        ("memory://images", "vanish when the task ends"),
        ("MEMORY://images", "vanish when the task ends"),
        ("https://example.com/images", "read-only"),
        ("s3://", "names no bucket"),
        ("s 3://bucket/x", "neither a path nor a URI"),
        # Airflow 3.1 makes such a path absolute itself; 3.3 keeps it relative, and so refused.
        *(
            [(ObjectStoragePath("relative/images"), "relative path")]
            if not ObjectStoragePath("x").path.startswith("/")
            else []
        ),
        (ObjectStoragePath("memory://images"), "vanish"),
        (PurePosixPath("images"), "relative path"),
    ],
    ids=repr,
)
def test_destinations_that_cannot_work(destination, message):
    with pytest.raises(InvalidDestinationError, match=message) as caught:
        check_destination(destination)
    assert isinstance(caught.value, InvalidParameterError)
    assert "file:///data/images" in str(caught.value)  # every message shows what would work


@pytest.mark.parametrize(
    "destination",
    [
        "/data/images",
        "file:///data/images",
        "local:///data/images",
        "s3://aws_default@bucket/images",
        "gs://bucket/images/{{ ds }}",
        ObjectStoragePath("file:///data/images"),
        PurePosixPath("/data/images"),
    ],
    ids=repr,
)
def test_destinations_that_can_work(destination):
    check_destination(destination)


def test_an_unknown_store_fails_as_an_invalid_destination():
    with pytest.raises(InvalidDestinationError, match="no installed file system handles"):
        destination_folder("nosuchstore://bucket/images")


def test_a_store_whose_package_is_missing_fails_as_an_invalid_destination(monkeypatch, tmp_path):
    # A registered file system whose library is missing fails on first use (s3 without s3fs, say).
    def missing(*args, **kwargs):
        raise ImportError("Please install gcsfs to access Google Storage")

    monkeypatch.setattr(ObjectStoragePath, "mkdir", missing)
    with pytest.raises(InvalidDestinationError, match="gcsfs .*Install the Airflow provider"):
        prepare_destination(tmp_path.as_uri())


def test_a_store_without_a_registered_file_system_fails_as_an_invalid_destination():
    with pytest.raises(InvalidDestinationError, match="no installed file system handles"):
        prepare_destination("gs://google_cloud_default@bucket/images")


def test_prepare_destination_creates_the_folder(tmp_path):
    directory = prepare_destination(str(tmp_path / "a" / "b"))
    assert directory.path == str(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    with pytest.raises(DestinationNotWritableError, match="Cannot write to the destination"):
        (tmp_path / "file").write_text("x")
        prepare_destination((tmp_path / "file" / "sub").as_uri())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_prepare_destination_refuses_a_read_only_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(DestinationNotWritableError, match="no write permission"):
            prepare_destination(tmp_path.as_uri())
    finally:
        tmp_path.chmod(0o700)


# --- The sidecar -----------------------------------------------------------------------------


def test_sidecar_metadata_records_sources_without_their_secrets():
    prediction = Prediction.from_api(
        {
            "id": PID,
            "model": "black-forest-labs/flux-schnell",
            "status": "succeeded",
            "input": {"prompt": "a lighthouse", "seed": 42},
            "metrics": {"predict_time": 1.5},
            "created_at": "2026-12-01T00:00:00Z",
            "completed_at": "2026-12-01T00:00:02Z",
            "logs": "step 1\n",
            "output": [
                "https://user:pw@files.example/out-0.webp?X-Amz-Credential=AKIA&X-Amz-Signature=abc#frag",
                "data:image/png;base64," + "A" * 400,
            ],
        }
    )
    metadata = sidecar_metadata(prediction, ["file:///data/x_0.webp"])
    assert metadata["source_urls"] == ["https://files.example/out-0.webp", "data:image/png;base64,...(422 chars)"]
    assert metadata["stored"] == ["file:///data/x_0.webp"]
    assert metadata["input"] == {"prompt": "a lighthouse", "seed": 42}
    assert metadata["status"] == "succeeded"
    assert metadata["id"] == PID
    assert metadata["metrics"] == {"predict_time": 1.5}
    assert "logs" not in metadata
    assert "X-Amz" not in json.dumps(metadata)

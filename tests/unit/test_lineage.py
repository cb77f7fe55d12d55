"""lineage.py: dataset names, bounds and facet contents; the operators' OpenLineage methods."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from airflow_provider_cometapi.batch.manifest import ManifestEntry
from airflow_provider_cometapi.cost import image_count
from airflow_provider_cometapi.lineage import (
    MAX_FILE_DATASETS,
    MAX_PREDICTION_IDS,
    RUN_FACET_NAME,
    OutputRef,
    PredictionsSummary,
    batch_summary,
    dataset_name,
    output_refs,
    prediction_summary,
)
from airflow_provider_cometapi.models import Prediction
from airflow_provider_cometapi.operators.batch import CreatePredictionBatchOperator
from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator
from airflow_provider_cometapi.storage import StoredPrediction

SCHNELL = "black-forest-labs/flux-schnell"

# --- Names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        # Local files: OpenLineage's LocalFileSystem naming ("file", the absolute path).
        ("/data/images/abc_0.webp", "file", "/data/images/abc_0.webp"),
        ("file:///data/images/abc_0.webp", "file", "/data/images/abc_0.webp"),
        ("local:///data/images/abc_0.webp", "file", "/data/images/abc_0.webp"),
        ("/data//images/./abc_0.webp", "file", "/data/images/abc_0.webp"),
        # A host names a remote file system: file://{host}.
        ("file://nas01/data/images/abc_0.webp", "file://nas01", "/data/images/abc_0.webp"),
        # Object stores: the bucket is the namespace, the key the name; the Airflow connection id is dropped.
        ("s3://my-bucket/images/abc_0.webp", "s3://my-bucket", "images/abc_0.webp"),
        ("s3://aws_default@my-bucket/images/abc_0.webp", "s3://my-bucket", "images/abc_0.webp"),
        ("s3a://my-bucket/abc_0.webp", "s3://my-bucket", "abc_0.webp"),
        ("gs://my-bucket/images/abc_0.png", "gs://my-bucket", "images/abc_0.png"),
        ("gs://google_cloud_default@my-bucket/a/abc.json", "gs://my-bucket", "a/abc.json"),
        ("gcs://my-bucket/images/abc_0.png", "gs://my-bucket", "images/abc_0.png"),
        ("S3://My-Bucket/Images/abc_0.webp", "s3://My-Bucket", "Images/abc_0.webp"),
        # Any other store: its scheme and bucket, as Airflow's ObjectStoragePath.namespace says.
        ("abfs://azure_conn@container/images/abc_0.webp", "abfs://container", "images/abc_0.webp"),
        ("hdfs://namenode:8020/images/abc_0.webp", "hdfs://namenode:8020", "/images/abc_0.webp"),
        # A folder (the bounded form): no trailing slash in the name.
        ("s3://my-bucket/images/", "s3://my-bucket", "images"),
    ],
)
def test_dataset_names_follow_openlineage_naming(uri, namespace, name):
    assert dataset_name(uri) == (namespace, name)


def test_names_match_objectstoragepath_for_what_the_operators_store():
    # The operators report str(ObjectStoragePath): the names must be those of the path's own parts.
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    for uri in ("file:///tmp/images/abc_0.webp", "gs://conn@bkt/images/abc_0.webp"):
        path = ObjectStoragePath(uri)
        namespace, name = dataset_name(str(path))
        # Airflow 3.1's namespace keeps the connection id (``gs://conn@bkt``); a dataset's never does.
        assert namespace == re.sub(r"//[^@/]*@", "//", path.namespace)
        assert name.lstrip("/") == path.key


# --- Bounds ---------------------------------------------------------------------------------


def test_files_are_named_one_by_one_up_to_the_bound_in_order_and_once():
    uris = [f"s3://conn@bucket/run/{i}.webp" for i in range(MAX_FILE_DATASETS)]
    refs = output_refs([*uris, uris[0], "s3://bucket/run/0.webp"])  # the same object three times
    assert refs == [OutputRef("s3://bucket", f"run/{i}.webp") for i in range(MAX_FILE_DATASETS)]


def test_past_the_bound_the_folders_stand_for_their_files():
    # A 10,000-input batch: 20,000 files in one folder, and a few elsewhere.
    uris = [f"/data/batch/p{i}_0.webp" for i in range(10_000)] + [f"/data/batch/p{i}.json" for i in range(10_000)]
    uris += ["s3://bucket/other/a.webp", "s3://bucket/other/b.webp"]
    assert output_refs(uris) == [
        OutputRef("file", "/data/batch", 20_000),
        OutputRef("s3://bucket", "other", 2),
    ]


def test_files_at_a_bucket_root_group_under_its_root():
    uris = [f"s3://bucket/{i}.webp" for i in range(MAX_FILE_DATASETS + 1)]
    assert output_refs(uris) == [OutputRef("s3://bucket", "/", MAX_FILE_DATASETS + 1)]


def test_the_folders_are_bounded_too():
    uris = [f"s3://bucket/f{i}/x.webp" for i in range(3 * MAX_FILE_DATASETS)]
    refs = output_refs(uris)
    assert len(refs) == MAX_FILE_DATASETS
    assert refs[0] == OutputRef("s3://bucket", "f0", 1)


def test_the_run_facet_holds_at_most_the_bound_of_ids_and_the_count_of_all():
    summary = PredictionsSummary(model=SCHNELL, prediction_ids=tuple(f"id{i}" for i in range(10_000)), image_count=3)
    fields = summary.facet_fields()
    assert fields["predictionIds"] == [f"id{i}" for i in range(MAX_PREDICTION_IDS)]
    assert fields["predictionCount"] == 10_000
    assert fields == {
        "model": SCHNELL,
        "predictionIds": fields["predictionIds"],
        "predictionCount": 10_000,
        "imageCount": 3,
        "cost": None,
        "currency": None,
    }


# --- Facet contents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "count"),
    [
        ({"output": ["a", "b"]}, 2),
        ({"output": "a"}, 1),
        ({"output": None}, 0),
        ({}, 0),
        ({"output": ["a"], "metrics": {"image_count": 4}}, 4),  # the gateway's own count wins
        ({"output": ["a"], "metrics": {"image_count": True}}, 1),  # not a count
        ({"output": ["a"], "metrics": {"image_count": -1}}, 1),
        ({"output": ["a"], "metrics": None}, 1),
    ],
)
def test_image_count(prediction, count):
    assert image_count(prediction) == count


def test_a_prediction_summary_with_and_without_a_cost():
    prediction = {"id": "abc", "model": SCHNELL, "output": ["u0", "u1"], "cost": 0.006, "currency": "USD"}
    assert prediction_summary(prediction) == PredictionsSummary(SCHNELL, ("abc",), 2, 0.006, "USD")
    # Until prices are set (or for a model without one) there is no cost: never a guess.
    assert prediction_summary({"id": "abc", "output": ["u0"], "cost": None}, model=SCHNELL) == PredictionsSummary(
        SCHNELL, ("abc",), 1, None, None
    )
    # A result always names its connection's currency; without a cost the facet names none.
    assert prediction_summary({"id": "abc", "cost": None, "currency": "USD"}).currency is None
    assert prediction_summary({"id": "abc", "cost": "0.1"}).cost is None
    assert prediction_summary({"id": "abc", "cost": 1}).cost == 1.0


def entry(index: int, **fields) -> ManifestEntry:
    return ManifestEntry(index=index, input={"prompt": str(index)}, fingerprint=f"f{index}", **fields)


def test_a_batch_summary_counts_every_prediction_and_the_images_that_succeeded():
    entries = [
        # Stored: one image and its sidecar.
        entry(0, prediction_id="p0", status="succeeded", stored=["/d/p0_0.webp", "/d/p0.json"]),
        # Retried after a failure: both predictions were made.
        entry(1, prediction_id="p1b", previous_ids=["p1a"], status="succeeded", stored=["/d/p1b_0.png", "/d/p1b.json"]),
        # No destination: the output URLs.
        entry(2, prediction_id="p2", status="succeeded", outputs=["https://x/a.webp", "https://x/b.webp"]),
        entry(3, prediction_id="p3", status="failed", error="boom"),
        entry(4),  # never created
    ]
    summary = batch_summary(SCHNELL, entries, {"total": 5, "cost": 0.012, "currency": "USD"})
    assert summary == PredictionsSummary(SCHNELL, ("p0", "p1a", "p1b", "p2", "p3"), 4, 0.012, "USD")
    assert batch_summary(SCHNELL, entries, {"total": 5}).cost is None


# --- OpenLineage objects (with the provider installed) ---------------------------------------


@pytest.fixture
def openlineage():
    pytest.importorskip("airflow.providers.openlineage", reason="apache-airflow-providers-openlineage not installed")
    from openlineage.client.serde import Serde

    return Serde


def test_operator_lineage_builds_output_datasets_and_the_run_facet(openlineage):
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_cometapi.lineage import operator_lineage

    summary = PredictionsSummary(SCHNELL, ("abc",), 1, None, None)
    lineage = operator_lineage(
        summary=summary,
        stored=["s3://aws@bucket/img/abc_0.webp", "s3://aws@bucket/img/abc.json"],
        also=["s3://aws@bucket/img/abc.json", "s3://bucket/img/run.manifest.jsonl"],
    )
    assert isinstance(lineage, OperatorLineage)
    assert [(out.namespace, out.name) for out in lineage.outputs] == [
        ("s3://bucket", "img/abc_0.webp"),
        ("s3://bucket", "img/abc.json"),
        ("s3://bucket", "img/run.manifest.jsonl"),
    ]
    facet = json.loads(openlineage.to_json(lineage.run_facets[RUN_FACET_NAME]))
    assert facet.pop("_producer") and facet.pop("_schemaURL")
    # A cost of None is left out of the event, as OpenLineage leaves out every null.
    assert facet == {"model": SCHNELL, "predictionIds": ["abc"], "predictionCount": 1, "imageCount": 1}
    assert operator_lineage(summary=None).run_facets == {}


def test_a_10000_input_batch_makes_a_small_event(openlineage):
    from airflow_provider_cometapi.lineage import operator_lineage

    ids = tuple(f"{i:026d}" for i in range(10_000))
    stored = [f"s3://conn@bucket/batch/{pid}{suffix}" for pid in ids for suffix in ("_0.webp", ".json")]
    lineage = operator_lineage(
        summary=PredictionsSummary(SCHNELL, ids, 10_000, 30.0, "USD"),
        stored=stored,
        also=["s3://conn@bucket/batch/nightly.manifest.jsonl"],
    )
    folder, manifest = lineage.outputs
    assert (folder.namespace, folder.name) == ("s3://bucket", "batch")
    assert folder.outputFacets["outputStatistics"].fileCount == 20_000
    assert (manifest.namespace, manifest.name, manifest.outputFacets) == (
        "s3://bucket",
        "batch/nightly.manifest.jsonl",
        {},
    )
    size = len(openlineage.to_json(lineage.run_facets[RUN_FACET_NAME])) + sum(
        len(openlineage.to_json(output)) for output in lineage.outputs
    )
    assert size < 8_000, size


# --- The operators' methods -----------------------------------------------------------------


def succeeded(prediction_id: str = "abc", outputs: int = 2) -> Prediction:
    data = {
        "id": prediction_id,
        "model": SCHNELL,
        "status": "succeeded",
        "output": [f"https://files.example/{prediction_id}/{i}.webp" for i in range(outputs)],
    }
    return Prediction.from_api(data)


def test_the_storage_operator_reports_what_it_stored(openlineage):
    operator = SavePredictionOutputsOperator(task_id="store", prediction_id="abc", destination="s3://aws@bucket/img")
    assert operator.get_openlineage_facets_on_complete(None) is None  # nothing stored yet (or it failed)
    operator._lineage = (
        {**succeeded().to_dict(), "cost": 0.006, "currency": "USD"},
        StoredPrediction("abc", ["s3://aws@bucket/img/abc_0.webp", "s3://aws@bucket/img/abc_1.webp"], None),
    )
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(out.namespace, out.name) for out in lineage.outputs] == [
        ("s3://bucket", "img/abc_0.webp"),
        ("s3://bucket", "img/abc_1.webp"),
    ]
    facet = lineage.run_facets[RUN_FACET_NAME]
    assert (facet.model, facet.predictionIds, facet.imageCount, facet.cost) == (SCHNELL, ["abc"], 2, 0.006)


def test_the_create_operator_reports_its_run_facet(openlineage):
    operator = CreatePredictionOperator(task_id="generate", model=SCHNELL, input={"prompt": "a lighthouse"})
    assert operator.get_openlineage_facets_on_complete(None) is None  # nothing created
    operator.prediction_id = "abc"  # created, not waited for (or the wait failed)
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert lineage.outputs == []
    facet = lineage.run_facets[RUN_FACET_NAME]
    assert (facet.model, facet.predictionIds, facet.predictionCount, facet.imageCount) == (SCHNELL, ["abc"], 1, 0)
    operator._lineage = {**succeeded().to_dict(), "cost": 0.006, "currency": "USD"}
    facet = operator.get_openlineage_facets_on_complete(None).run_facets[RUN_FACET_NAME]
    assert (facet.imageCount, facet.cost, facet.currency) == (2, 0.006, "USD")


def test_the_batch_operator_reports_its_files_and_manifest(openlineage):
    operator = CreatePredictionBatchOperator(task_id="batch", model=SCHNELL, inputs=["a", "b"], destination="/d")
    assert operator.get_openlineage_facets_on_complete(None) is None  # the batch never opened
    entries = [
        entry(0, prediction_id="p0", status="succeeded", stored=["/d/p0_0.webp", "/d/p0.json"]),
        entry(1, prediction_id="p1", status="failed"),
    ]
    operator._run = SimpleNamespace(
        model=SCHNELL, entries=entries, manifest_uri="/d/batch.manifest.jsonl", result=lambda: {"total": 2}
    )
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(out.namespace, out.name) for out in lineage.outputs] == [
        ("file", "/d/p0_0.webp"),
        ("file", "/d/p0.json"),
        ("file", "/d/batch.manifest.jsonl"),
    ]
    facet = lineage.run_facets[RUN_FACET_NAME]
    assert (facet.predictionIds, facet.predictionCount, facet.imageCount) == (["p0", "p1"], 2, 1)


# --- Optional: nothing of OpenLineage is imported, and nothing breaks without it --------------

WITHOUT_OPENLINEAGE = textwrap.dedent(
    """
    import sys

    class NoOpenLineageClient:
        # As if openlineage-python were not installed (without it no OpenLineage event is ever made).
        def find_spec(self, name, path=None, target=None):
            if name == "openlineage" or name.startswith("openlineage."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    if sys.argv[1] == "blocked":
        sys.meta_path.insert(0, NoOpenLineageClient())

    import airflow_provider_cometapi.lineage as lineage
    import airflow_provider_cometapi.operators.batch
    import airflow_provider_cometapi.operators.prediction
    import airflow_provider_cometapi.operators.storage
    from airflow_provider_cometapi.get_provider_info import get_provider_info

    get_provider_info()
    assert lineage.dataset_name("s3://conn@bucket/key") == ("s3://bucket", "key")
    # Airflow's provider discovery reads every installed provider's get_provider_info; nothing more
    # of OpenLineage may be loaded by importing ours.
    discovery = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}
    loaded = sorted(
        name
        for name in sys.modules
        if name.startswith(("openlineage", "airflow.providers.openlineage")) and name not in discovery
    )
    assert not loaded, loaded
    print("ok")
    """
)


@pytest.mark.parametrize("openlineage_installed", ["blocked", "as-installed"])
def test_the_provider_imports_without_openlineage_and_imports_none_of_it(openlineage_installed):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENLINEAGE, openlineage_installed], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_the_decorator_reports_as_the_create_operator_does():
    from airflow_provider_cometapi.decorators.prediction import _CometAPIDecoratedOperator

    method = _CometAPIDecoratedOperator.get_openlineage_facets_on_complete
    assert method is CreatePredictionOperator.get_openlineage_facets_on_complete

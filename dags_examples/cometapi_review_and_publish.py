"""
Generate a few candidates for a prompt, let a person choose in Airflow's UI, publish the chosen.

1. ``generate``: one prediction with ``num_outputs`` candidates (deferrable: the wait holds no
   worker slot).
2. ``store``: the candidates into ``<storage root>/candidates/<run>/``, with their sidecar.
3. ``review``: a human-in-the-loop task. The reviewer opens the run in Airflow (Browse >
   Required Actions, or the task's page), sees every candidate as an image, ticks the ones to
   publish or **Reject all**. The images are served by the provider's gallery, so they load
   with the reviewer's own login whatever the storage.
4. ``publish``: copies only the chosen files into ``<storage root>/published/`` and emits an
   event on the ``cometapi_published_images`` asset, with the URIs in its ``extra``. With
   "Reject all" it is skipped: nothing published, no event.

Configure it without editing the file: params ``prompt``, ``candidates`` and ``storage_root``
(else the Variable ``cometapi_storage_root``, else ``file:///tmp/cometapi-images``); the
connection ``cometapi_default``.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.review import ReviewOutputsOperator, publish_outputs
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

PUBLISHED_IMAGES = Asset(name="cometapi_published_images", uri="cometapi://published-images")

STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"

with DAG(
    dag_id="cometapi_review_and_publish",
    description="Generate candidates, let a reviewer pick in the Airflow UI, publish only the chosen ones.",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["cometapi", "example"],
    render_template_as_native_obj=True,  # "{{ params.candidates }}" stays a number
    params={
        "prompt": Param("a poster of a lighthouse at dawn, flat illustration", type="string"),
        "candidates": Param(3, type="integer", minimum=1, maximum=4, description="How many images to choose from."),
        "storage_root": Param("", type="string", description="Where to store; empty: Variable or /tmp."),
    },
):
    generate = CreatePredictionOperator(
        task_id="generate",
        model="black-forest-labs/flux-schnell",
        input={
            "prompt": "{{ params.prompt }}",
            "num_outputs": "{{ params.candidates }}",
            "aspect_ratio": "1:1",
        },
        deferrable=True,
        poll_interval=2,
    )

    store = SavePredictionOutputsOperator(
        task_id="store",
        prediction_id=generate.output,  # the finished prediction, as an XComArg
        destination=STORAGE_ROOT + "/candidates/{{ run_id | replace(':', '-') | replace('+', '-') }}",
    )

    review = ReviewOutputsOperator(
        task_id="review",
        outputs_of="store",
        subject="Which of these images should be published?",
        intro="Prompt: *{{ params.prompt }}*",
    )

    @task(outlets=[PUBLISHED_IMAGES])
    def publish(decision: dict[str, Any], params: dict[str, Any] | None = None, **context: Any) -> list[str]:
        """Copy the chosen images to published/; the asset event lists them."""
        if decision["rejected"]:
            raise AirflowSkipException("The reviewer rejected every candidate: nothing is published.")
        root = (params or {}).get("storage_root") or context["var"]["value"].get(
            "cometapi_storage_root", "file:///tmp/cometapi-images"
        )
        published = publish_outputs(decision["chosen"], f"{root}/published")
        context["outlet_events"][PUBLISHED_IMAGES].extra.update(
            {"uris": published, "reviewed_by": decision["responded_by_user"]}
        )
        return published

    generate >> store >> review
    publish(review.output)

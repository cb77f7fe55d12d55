"""
Runs whenever ``cometapi_daily_images`` stores new images: writes an ``index.html`` gallery
(and ``index.json``) beside them, from the asset events' metadata.

This is the "next pipeline picks them up" side: it needs no CometAPI call, only what the
storage task attached to its asset events (stored URIs, prompt, model, prediction id). Run by
hand, with no triggering events, it indexes the folder of its logical date instead.
"""

from __future__ import annotations

import datetime
import html
import json
from typing import Any

from airflow.sdk import DAG, Asset, ObjectStoragePath, task

# The same asset and storage root as cometapi_daily_images (an asset is known by its name and URI).
DAILY_IMAGES = Asset(name="cometapi_daily_images", uri="cometapi://daily-images")
STORAGE_ROOT = "{{ params.storage_root or var.value.get('cometapi_storage_root', 'file:///tmp/cometapi-images') }}"
# The run's date: its logical date, or for a manual run without one, the day it was triggered.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="cometapi_daily_index",
    description="Index the images stored by cometapi_daily_images.",
    schedule=[DAILY_IMAGES],
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["cometapi", "example"],
    params={"storage_root": ""},
):

    @task(templates_dict={"folder": STORAGE_ROOT + "/" + DAY})
    def write_index(templates_dict: dict[str, Any] | None = None, **context: Any) -> str:
        entries = [
            event.extra
            for events in context["triggering_asset_events"].values()
            for event in events
            if event.extra.get("uris")
        ]
        folder = ObjectStoragePath(entries[0]["uris"][0]).parent if entries else None
        if folder is None:
            assert templates_dict is not None
            folder = ObjectStoragePath(templates_dict["folder"])
            entries = [json.loads(sidecar.read_text()) for sidecar in sorted(folder.glob("*.json"))]
            entries = [
                {"prediction_id": e["id"], "model": e["model"], "prompt": e["input"].get("prompt"), "uris": e["stored"]}
                for e in entries
                if "stored" in e
            ]
        cards = "\n".join(
            f'<figure><img src="{html.escape(uri.rsplit("/", 1)[-1])}" width="256">'
            f"<figcaption>{html.escape(str(entry.get('prompt')))}</figcaption></figure>"
            for entry in entries
            for uri in entry["uris"]
        )
        (folder / "index.html").write_text(
            f"<!doctype html><title>CometAPI images</title><h1>{len(entries)} predictions</h1>\n{cards}\n"
        )
        (folder / "index.json").write_text(json.dumps(entries, indent=2))
        print(f"Indexed {len(entries)} predictions in {folder / 'index.html'}")
        return str(folder / "index.html")

    write_index()

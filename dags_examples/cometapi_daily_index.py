"""
Runs whenever ``cometapi_daily_images`` stores new images: writes an ``index.html`` gallery
(and ``index.json``) beside them, from the asset events' metadata.

This is the "next pipeline picks them up" side: it needs no CometAPI call. The asset events
(stored URIs, prompt, model, prediction id) say which folder got new images, and the JSON
sidecars there describe every image of the day. Run by hand, with no triggering events, it
indexes the folder of its run's date.
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
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["cometapi", "example"],
    params={"storage_root": ""},
):

    @task(templates_dict={"folder": STORAGE_ROOT + "/" + DAY})
    def write_index(templates_dict: dict[str, Any] | None = None, **context: Any) -> str:
        # The events say where the new images are; the sidecars of that folder are the index,
        # so an index run that sees only some of the day's events still lists every image.
        stored = [
            uri
            for events in context["triggering_asset_events"].values()
            for event in events
            for uri in event.extra.get("uris", [])
        ]
        assert templates_dict is not None
        folder = ObjectStoragePath(stored[0]).parent if stored else ObjectStoragePath(templates_dict["folder"])
        entries = []
        for sidecar in sorted(folder.glob("*.json")):
            metadata = json.loads(sidecar.read_text())
            if "stored" in metadata:
                entries.append(
                    {
                        "prediction_id": metadata["id"],
                        "model": metadata.get("model"),
                        "prompt": (metadata.get("input") or {}).get("prompt"),
                        "uris": metadata["stored"],
                    }
                )
        cards = "\n".join(
            f'<figure><img src="{html.escape(uri.rsplit("/", 1)[-1])}" width="256">'
            f"<figcaption>{html.escape(str(entry['prompt']))}</figcaption></figure>"
            for entry in entries
            for uri in entry["uris"]
        )
        page = f"<!doctype html><title>CometAPI images</title><h1>{len(entries)} predictions</h1>\n{cards}\n"
        (folder / "index.html").write_text(page)
        (folder / "index.json").write_text(json.dumps(entries, indent=2))
        print(f"Indexed {len(entries)} predictions in {folder / 'index.html'}")
        return str(folder / "index.html")

    write_index()

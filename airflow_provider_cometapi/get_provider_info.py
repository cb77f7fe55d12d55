"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_cometapi import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-cometapi",
        "name": "CometAPI",
        "description": "Generate images with CometAPI's Replicate-compatible prediction API (FLUX and "
        "other models), wait for them in the triggerer, and store them in any object storage.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "CometAPI",
                "external-doc-url": "https://api.cometapi.com",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "CometAPI",
                "python-modules": [
                    "airflow_provider_cometapi.operators.batch",
                    "airflow_provider_cometapi.operators.prediction",
                    "airflow_provider_cometapi.operators.storage",
                    "airflow_provider_cometapi.operators.review",
                ],
            }
        ],
        "config": {
            "cometapi": {
                "description": "Options of the CometAPI provider.",
                "options": {
                    "min_defer_seconds": {
                        "description": "Seconds a CometAPI trigger holds its event after its task deferred, "
                        "so that the scheduler has read the executor's report of the deferral first "
                        "(apache/airflow#72716: a resume sooner can get the task failed with 'state "
                        "mismatch'). Unset: [workers] min_heartbeat_interval + 3 (8 with Airflow's "
                        "defaults). 0 turns the hold off (dag.test(), or an Airflow with the bug fixed).\n",
                        "version_added": None,
                        "type": "float",
                        "example": "8",
                        "default": None,
                    }
                },
            }
        },
        "sensors": [
            {
                "integration-name": "CometAPI",
                "python-modules": ["airflow_provider_cometapi.sensors.prediction"],
            }
        ],
        "hooks": [
            {
                "integration-name": "CometAPI",
                "python-modules": ["airflow_provider_cometapi.hooks.cometapi"],
            }
        ],
        "triggers": [
            {
                "integration-name": "CometAPI",
                "python-modules": [
                    "airflow_provider_cometapi.triggers.batch",
                    "airflow_provider_cometapi.triggers.prediction",
                ],
            }
        ],
        "task-decorators": [
            {"name": "cometapi", "class-name": "airflow_provider_cometapi.decorators.prediction.cometapi_task"}
        ],
        "plugins": [
            {"name": "cometapi", "plugin-class": "airflow_provider_cometapi.plugins.cometapi.CometAPIPlugin"},
        ],
        "extra-links": ["airflow_provider_cometapi.links.prediction.PredictionLink"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_cometapi.hooks.cometapi.CometAPIHook",
                "hook-name": "CometAPI",
                "connection-type": "cometapi",
                "ui-field-behaviour": {
                    # The port stays visible: the UI's Test button sends port 0 for an empty one,
                    # and Airflow refuses to test a port that differs from the stored one (empty).
                    "hidden-fields": ["schema", "login", "extra"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {
                        "password": "your CometAPI key (sk-...)",
                        "host": "https://api.cometapi.com",
                        "port": "0 = the Base URL's port (the Test button needs a value)",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Read timeout (seconds)",
                        "description": "How long to wait for an answer to one request.",
                        "schema": {"type": ["number", "null"], "default": 60, "minimum": 1},
                    },
                    "connect_timeout": {
                        "label": "Connect timeout (seconds)",
                        "description": "How long to wait to open a connection to the gateway.",
                        "schema": {"type": ["number", "null"], "default": 10, "minimum": 1},
                    },
                    "download_timeout": {
                        "label": "Download timeout (seconds)",
                        "description": "The most one output download may take, from connecting to the last byte.",
                        "schema": {"type": ["number", "null"], "default": 300, "minimum": 1},
                    },
                    "max_output_bytes": {
                        "label": "Largest output (bytes)",
                        "description": "An output file larger than this fails the task and is not stored "
                        "(default 100 MiB).",
                        "schema": {"type": ["integer", "null"], "default": 104857600, "minimum": 1},
                    },
                    "max_retries": {
                        "label": "Retries per request",
                        "description": "Retries of a request after a transient failure (429, 5xx, "
                        "timeouts). A create is only retried when nothing can have been created.",
                        "schema": {"type": ["integer", "null"], "default": 4, "minimum": 0, "maximum": 10},
                    },
                    "prediction_url_template": {
                        "label": "Prediction page URL template",
                        "description": "Optional link from a task to its prediction, with "
                        "{prediction_id}, for example https://replicate.com/p/{prediction_id}.",
                        "schema": {"type": ["string", "null"]},
                    },
                    # A JSON text field: the form stores it as a string, the hook reads either form.
                    "prices": {
                        "label": "Prices per image (JSON)",
                        "description": "Optional. What one output image of each model costs, as JSON: "
                        '{"black-forest-labs/flux-schnell": 0.003}. Tasks report cost = images x price '
                        "(unknown for a model not listed) and max_cost needs the model's price.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "currency": {
                        "label": "Currency of the prices",
                        "description": "The currency the prices and costs are in, for example USD or EUR.",
                        "schema": {"type": ["string", "null"], "default": "USD"},
                    },
                },
            }
        ],
    }

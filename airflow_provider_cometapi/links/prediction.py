"""A link from a task to its prediction's page, where the connection says how to build one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from airflow_provider_cometapi.hooks.cometapi import CometAPIHook

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

PREDICTION_ID_XCOM_KEY = "prediction_id"


class PredictionLink(BaseOperatorLink):
    """
    "CometAPI prediction": the connection's ``prediction_url_template`` extra (for example
    ``https://replicate.com/p/{prediction_id}``) filled with the task's prediction id.

    Airflow computes it on the worker when the task ends and keeps it for the UI; without a
    template, or before a prediction exists, there is no link.
    """

    name = "CometAPI prediction"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        prediction_id = XCom.get_value(ti_key=ti_key, key=PREDICTION_ID_XCOM_KEY)
        conn_id = getattr(operator, "cometapi_conn_id", CometAPIHook.default_conn_name)
        template = CometAPIHook(conn_id).settings.prediction_url_template if prediction_id else None
        return template.format(prediction_id=prediction_id) if template else ""

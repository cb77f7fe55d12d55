"""TaskFlow decorators: ``@task.cometapi``, registered through the provider info's ``task-decorators``."""

from __future__ import annotations

from airflow_provider_cometapi.decorators.prediction import cometapi_task

__all__ = ["cometapi_task"]

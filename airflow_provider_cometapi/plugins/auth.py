"""
Who may see a run's images: exactly who Airflow's own API lets read that DAG's runs, task
instances and XComs.

The user comes from the same place as for Airflow's REST API and UI (``get_user``: the
``Authorization: Bearer`` token, else the UI's session cookie), and the decision is the
configured auth manager's (``batch_is_authorized_dag``), so Simple, FAB, Keycloak or any other
auth manager, and per-DAG permissions and teams, apply unchanged. No session answers 401; a
token the manager refuses, or a user who may not read the DAG, 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, HTTPException, status

# What the gallery shows of a DAG: its runs, their task instances, and what those recorded.
READ_ENTITIES = ("RUN", "TASK_INSTANCE", "XCOM")


def authorization_requests(dag_id: str, team_name: str | None) -> list[dict[str, Any]]:
    """The auth manager requests that must all be granted for ``dag_id``."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    # Teams (multi-team deployments) came in a later Airflow than the oldest this provider supports.
    details = DagDetails(id=dag_id, team_name=team_name) if team_name is not None else DagDetails(id=dag_id)
    return [
        {"method": "GET", "details": details},
        *({"method": "GET", "access_entity": DagAccessEntity[name], "details": details} for name in READ_ENTITIES),
    ]


def require_dag_read(dag_id: str, user: Annotated[Any, Depends(get_user)]) -> Any:
    """FastAPI dependency: the user, once the auth manager lets them read ``dag_id``; else 403."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    team_name = DagModel.get_team_name(dag_id) if hasattr(DagModel, "get_team_name") else None
    requests = authorization_requests(dag_id, team_name)
    if not get_auth_manager().batch_is_authorized_dag(requests, user=user):  # type: ignore[arg-type]
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may not read this DAG's runs.")
    return user


DagReader = Annotated[Any, Depends(require_dag_read)]

"""PredictionSensor called directly, against the emulator."""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from airflow_provider_cometapi.hooks.cometapi import CometAPIHook
from airflow_provider_cometapi.sensors.prediction import PredictionSensor

SCHNELL = "black-forest-labs/flux-schnell"


def create(**control) -> str:
    return CometAPIHook().create_prediction(SCHNELL, {"prompt": "x", "_emulator": control}).id


def sensor(prediction_id: str, **kwargs) -> PredictionSensor:
    return PredictionSensor(task_id="sense", prediction_id=prediction_id, **{"poke_interval": 0.1, **kwargs})


def test_poke_reports_progress_until_done(cometapi_conn):
    prediction_id = create(duration=0.5)
    sense = sensor(prediction_id)
    first = sense.poke({})
    assert not first.is_done
    time.sleep(0.7)
    done = sense.poke({})
    assert done.is_done
    assert done.xcom_value["status"] == "succeeded"


def test_poke_fails_at_once_on_a_failed_prediction(cometapi_conn):
    prediction_id = create(outcome="failed", error="emulated", duration=0)
    time.sleep(0.1)
    with pytest.raises(AirflowFailException, match="emulated"):
        sensor(prediction_id).poke({})


def test_deferrable_defers_after_one_look(cometapi_conn):
    prediction_id = create(outcome="never")
    with pytest.raises(TaskDeferred) as deferred:
        sensor(prediction_id, deferrable=True, timeout=120).execute({})
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["prediction_id"] == prediction_id
    assert kwargs["cancel_on_kill"] is False
    assert kwargs["deadline"] == pytest.approx(time.time() + 120, abs=5)
    assert cometapi_conn.stats()["predictions"][prediction_id]["polls"] == 1


def test_deferrable_returns_at_once_when_already_done(cometapi_conn):
    prediction_id = create(duration=0)
    time.sleep(0.1)
    assert sensor(prediction_id, deferrable=True).execute({})["status"] == "succeeded"


def test_execute_complete_branches():
    sense = sensor("p1")
    ok = {"status": "succeeded", "prediction_id": "p1", "prediction": {"id": "p1"}, "message": ""}
    assert sense.execute_complete({}, ok) == {"id": "p1"}
    with pytest.raises(AirflowSensorTimeout):
        sense.execute_complete({}, {"status": "timeout", "prediction_id": "p1", "message": "late"})
    with pytest.raises(AirflowFailException, match="boom"):
        sense.execute_complete({}, {"status": "aborted", "prediction_id": "p1", "message": "boom"})


def test_deferrable_soft_fail_skips_an_already_failed_prediction(cometapi_conn):
    from airflow.providers.common.compat.sdk import AirflowSkipException

    prediction_id = create(outcome="failed", error="emulated", duration=0)
    time.sleep(0.1)
    with pytest.raises(AirflowSkipException, match="emulated"):
        sensor(prediction_id, deferrable=True, soft_fail=True).execute({})


def test_reschedule_mode_writes_the_prediction_log_once_at_the_end(cometapi_conn, capfd):
    prediction_id = create(duration=0.6)
    time.sleep(0.35)
    # Each reschedule runs a fresh sensor object, as Airflow does.
    assert not sensor(prediction_id, mode="reschedule").poke({}).is_done
    assert "Using seed" not in capfd.readouterr().out
    time.sleep(0.5)
    assert sensor(prediction_id, mode="reschedule").poke({}).is_done
    assert capfd.readouterr().out.count("Using seed") == 1


def test_poke_mode_streams_only_new_lines(cometapi_conn, capfd):
    prediction_id = create(duration=0.6)
    sense = sensor(prediction_id)
    time.sleep(0.35)
    sense.poke({})
    time.sleep(0.5)
    sense.poke({})
    assert capfd.readouterr().out.count("Using seed") == 1


def test_deferral_is_the_shared_one(cometapi_conn):
    from datetime import timedelta

    from airflow_provider_cometapi.triggers.prediction import DEFER_TIMEOUT_MARGIN, PredictionTrigger

    prediction_id = create(outcome="never")
    with pytest.raises(TaskDeferred) as deferred:
        sensor(prediction_id, deferrable=True, timeout=120, poke_interval=2).execute({})
    assert isinstance(deferred.value.trigger, PredictionTrigger)
    assert deferred.value.trigger.poll_interval == 2.0
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=120) + DEFER_TIMEOUT_MARGIN


def test_the_sensor_does_not_import_the_operator_module():
    import ast
    import inspect

    from airflow_provider_cometapi.sensors import prediction as sensor_module

    tree = ast.parse(inspect.getsource(sensor_module))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "airflow_provider_cometapi.operators.prediction" not in imported


BAD_ARGUMENTS = [
    # (sensor arguments, the argument the message names)
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),  # Airflow's own check would give a raw OverflowError
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"poke_interval": float("inf")}, "poke_interval"),
    ({"poke_interval": -1}, "poke_interval"),
    ({"poke_interval": 0, "deferrable": True}, "poke_interval"),
    ({"timeout": 0, "deferrable": True}, "timeout"),
    ({"timeout": 1e300, "deferrable": True}, "timeout"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_ARGUMENTS, ids=[repr(kwargs) for kwargs, _ in BAD_ARGUMENTS])
def test_waiting_arguments_that_cannot_work_fail_at_dag_parse(kwargs, name):
    from airflow_provider_cometapi.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=f"^{name} must be"):
        PredictionSensor(task_id="sense", prediction_id="p1", **kwargs)


def test_a_zero_poke_interval_stays_allowed_where_airflow_allows_it():
    assert PredictionSensor(task_id="sense", prediction_id="p1", poke_interval=0).poke_interval == 0


def test_a_poke_is_bounded_by_the_sensor_timeout(cometapi_conn):
    prediction_id = create(outcome="never")
    cometapi_conn.add_fault(kind="slow", route="get", count=-1, delay=5)
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout, match="did not finish before the deadline"):
        sensor(prediction_id, timeout=1).poke({})
    assert time.monotonic() - started < 2.5

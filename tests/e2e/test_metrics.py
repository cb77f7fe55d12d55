"""The provider's metrics in a real deployment, through Airflow's own StatsD client ([metrics] statsd_on)."""

from __future__ import annotations

import pytest

from tests.e2e.harness import REPO, AirflowStack
from tests.statsd import StatsdListener


@pytest.fixture(scope="module")
def statsd():
    listener = StatsdListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e2e_emulator, statsd):
    """The conftest's deployment, with Airflow's StatsD metrics sent to the listener."""
    home = tmp_path_factory.mktemp("airflow-e2e-metrics")
    env = {
        **e2e_emulator.airflow_env(),
        "AIRFLOW_VAR_COMETAPI_STORAGE_ROOT": (home / "images").as_uri(),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    with AirflowStack(home, [REPO / "dags_examples", REPO / "tests" / "e2e" / "dags"], env=env) as running:
        yield running


def test_a_deferred_prediction_sends_its_metrics_once(stack, emulator, statsd):
    run_id = stack.trigger("e2e_create_then_sense")
    assert stack.wait_for_run("e2e_create_then_sense", run_id) == "success"
    model = "black-forest-labs/flux-schnell"
    # The worker counted the create; the triggerer the end, its image, its timers, its gauge.
    statsd.wait_for(r"airflow\.cometapi\.predictions\.created:1\|c")
    statsd.wait_for(r"airflow\.cometapi\.predictions\.succeeded:1\|c")
    statsd.wait_for(r"airflow\.cometapi\.images:1\|c")
    wait = statsd.wait_for(r"airflow\.cometapi\.wait:[0-9.]+\|ms")
    assert 1_000 < float(wait.split(":")[1].split("|")[0]) < 120_000  # a 12 s prediction, in milliseconds
    statsd.wait_for(r"airflow\.cometapi\.predictions\.in_flight:0\|g")
    ours = statsd.ours()
    # One end, counted once (the sensor that found it finished counts nothing), and nothing per poll.
    assert sum(line.startswith("airflow.cometapi.predictions.succeeded:") for line in ours) == 1
    assert sum(line.startswith("airflow.cometapi.predictions.created:") for line in ours) == 1
    assert len(ours) <= 6 < emulator.stats(detail=False)["polls"], ours
    assert all(model not in line for line in ours)  # plain StatsD: the model tag is left out, the name kept


DAG_FILE = """
import datetime

from airflow.sdk import DAG

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator

with DAG("metrics_dag_test", schedule=None, start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)):
    CreatePredictionOperator(
        task_id="create",
        model="black-forest-labs/flux-schnell",
        input={"prompt": "metrics under dag.test()", "_emulator": {"duration": 2}},
        deferrable=True,
        poll_interval=0.2,
    )
"""

RUN_DAG_TEST = """
import sys

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print("STATE", bag.get_dag("metrics_dag_test").test().state)
"""


def test_dag_test_with_statsd_on_sends_the_same_lines(tmp_path, emulator):
    """The lighter check: one dag.test() run in a subprocess with [metrics] statsd_on, no deployment."""
    import json
    import os
    import subprocess
    import sys

    listener = StatsdListener()
    dags = tmp_path / "dags"
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            **emulator.airflow_env(),
            "AIRFLOW_HOME": str(tmp_path / "home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "PYTHONPATH": str(REPO),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {
                        "name": "metrics",
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(dags)},
                    }
                ]
            ),
        }
        dags.mkdir()
        (dags / "metrics_dag.py").write_text(DAG_FILE)
        script = tmp_path / "run_dag_test.py"
        script.write_text(RUN_DAG_TEST)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        done = subprocess.run(
            [sys.executable, str(script), str(dags)], env=env, capture_output=True, text=True, timeout=300
        )
        assert "STATE success" in done.stdout, (done.stdout[-3000:], done.stderr[-3000:])
        listener.wait_for(r"airflow\.cometapi\.predictions\.created:1\|c", timeout=10)
        listener.wait_for(r"airflow\.cometapi\.predictions\.succeeded:1\|c", timeout=10)
        listener.wait_for(r"airflow\.cometapi\.images:1\|c", timeout=10)
        listener.wait_for(r"airflow\.cometapi\.wait:[0-9.]+\|ms", timeout=10)
        listener.wait_for(r"airflow\.cometapi\.predictions\.in_flight:0\|g", timeout=10)
        ours = listener.ours()
        assert sum(line.startswith("airflow.cometapi.predictions.succeeded:") for line in ours) == 1, ours
        assert len(ours) <= 6 < emulator.stats(detail=False)["polls"], ours
    finally:
        listener.close()

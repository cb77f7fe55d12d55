"""DAGs with @task.cometapi, run by tests/integration/test_taskflow_dags.py with dag.test() against the emulator."""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_cometapi.operators.prediction import CreatePredictionOperator
from airflow_provider_cometapi.operators.storage import SavePredictionOutputsOperator

SCHNELL = "black-forest-labs/flux-schnell"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
FAST = {"poll_interval": 0.2}
# The tests point this Variable at a temporary folder.
DESTINATION = "{{ var.value.cometapi_test_destination }}"


def dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["cometapi-tests"])


@task
def subject() -> str:
    return "a red fox"


with dag("tf_deferred"):

    @task.cometapi(model=SCHNELL, deferrable=True, **FAST)
    def generate(thing: str, seed: int) -> dict[str, Any]:
        return {"prompt": f"{thing}, watercolor", "seed": seed}

    generate(subject(), seed=7)

with dag("tf_worker_string"):

    @task.cometapi(model=SCHNELL, deferrable=False, **FAST)
    def generate(thing: str) -> str:
        return f"{thing} in the snow"

    generate(subject())

with dag("tf_no_wait"):

    @task.cometapi(model=SCHNELL, wait_for_completion=False)
    def generate() -> str:
        return "not waited for"

    generate()

# The gateway holds the create call until the prediction is done: no poll, no deferral.
with dag("tf_prefer_wait"):

    @task.cometapi(model=SCHNELL, prefer_wait=10, deferrable=True, **FAST)
    def generate() -> dict[str, Any]:
        return {"prompt": "quick", "_emulator": {"duration": 0.2}}

    generate()

with dag("tf_mapped"):

    @task.cometapi(model=SCHNELL, deferrable=True, **FAST)
    def generate(thing: str, style: str) -> dict[str, Any]:
        return {"prompt": f"{thing}, {style}"}

    generate.partial(style="ink").expand(thing=["a cat", "a dog", "a bird"])

# .expand_kwargs() over an upstream task's list of argument dicts.
with dag("tf_expand_kwargs"):

    @task
    def arguments() -> list[dict[str, str]]:
        return [{"thing": "a cat", "style": "ink"}, {"thing": "a dog", "style": "charcoal"}]

    @task.cometapi(model=SCHNELL, deferrable=True, **FAST)
    def generate(thing: str, style: str) -> dict[str, Any]:
        return {"prompt": f"{thing}, {style}"}

    generate.expand_kwargs(arguments())

with dag("tf_chained"):

    @task.cometapi(model=SCHNELL, deferrable=True, **FAST)
    def generate(thing: str) -> dict[str, Any]:
        return {"prompt": thing, "num_outputs": 2}

    @task
    def describe(image: str) -> str:
        return image.rsplit("/", 1)[-1]

    @task
    def sidecar_name(sidecar: str) -> str:
        return sidecar.rsplit("/", 1)[-1]

    store = SavePredictionOutputsOperator(task_id="store", prediction_id=generate(subject()), destination=DESTINATION)
    describe.expand(image=store.output)
    sidecar_name(store.output["sidecar"])

with dag("tf_mapped_chained"):

    @task.cometapi(model=SCHNELL, deferrable=True, **FAST)
    def generate(thing: str) -> str:
        return thing

    SavePredictionOutputsOperator.partial(task_id="store", destination=DESTINATION).expand(
        prediction_id=generate.expand(thing=["a cat", "a dog"])
    )

# Every form of prediction_id the storage operator takes, from a classic create task.
with dag("tf_storage_forms"):
    create = CreatePredictionOperator(task_id="generate", model=SCHNELL, input={"prompt": "stored"}, **FAST)
    forms: dict[str, Any] = {
        "prediction": create.output,
        "id_xcom": create.output["prediction_id"],
        "template": "{{ ti.xcom_pull(task_ids='generate', key='prediction_id') }}",
    }
    for form, prediction_id in forms.items():
        store = SavePredictionOutputsOperator(
            task_id=f"store_{form}", prediction_id=prediction_id, destination=DESTINATION + "/" + form
        )
        create >> store

for outcome in ("failed", "canceled", "aborted"):
    with dag(f"tf_{outcome}"):

        @task.cometapi(model=SCHNELL, deferrable=True, task_id="generate", **FAST)
        def ends_badly(outcome: str = outcome) -> dict[str, Any]:
            return {"prompt": "x", "_emulator": {"outcome": outcome, "error": f"emulated {outcome} error"}}

        ends_badly()

for deferrable in (True, False):
    with dag(f"tf_timeout_{'deferred' if deferrable else 'worker'}"):

        @task.cometapi(model=SCHNELL, deferrable=deferrable, timeout=1, task_id="generate", **FAST)
        def slow() -> dict[str, Any]:
            return {"prompt": "slow", "_emulator": {"duration": 60}}

        slow()

with dag("tf_bad_return"):

    @task.cometapi(model=SCHNELL, deferrable=True)
    def generate() -> Any:
        return ["a prompt in a list"]

    generate()

# A try whose wait breaks (the test makes every poll fail for a while); its retry resumes the
# same prediction through Airflow 3.3's task state store, as CreatePredictionOperator does, in
# the triggerer and on the worker.
for deferrable in (True, False):
    with dag(f"tf_resume_{'deferred' if deferrable else 'worker'}"):

        @task.cometapi(
            model=SCHNELL,
            deferrable=deferrable,
            retries=1,
            retry_delay=datetime.timedelta(seconds=0),
            task_id="generate",
            **FAST,
        )
        def resumed() -> dict[str, Any]:
            return {"prompt": "resumed", "_emulator": {"duration": 3}}

        resumed()

# Over its budget (4 images asked, 3 allowed): refused before creating, and not retried.
with dag("tf_over_budget"):

    @task.cometapi(model=SCHNELL, max_images=3, retries=2, retry_delay=datetime.timedelta(seconds=0), **FAST)
    def generate() -> dict[str, Any]:
        return {"prompt": "too many", "num_outputs": 4}

    generate()

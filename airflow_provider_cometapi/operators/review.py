"""
A human review of stored images inside Airflow's UI, and publishing the ones a reviewer chose.

``ReviewOutputsOperator`` is a human-in-the-loop task (Airflow's ``HITLOperator``): its body
shows the images a storage task stored, served by the provider's gallery app (so the reviewer's
browser loads them whatever the storage, with the reviewer's own Airflow permissions), one
option per image and one to reject them all. ``publish_outputs`` then copies the chosen files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.standard.operators.hitl import HITLOperator

from airflow_provider_cometapi.plugins.cometapi import URL_PREFIX
from airflow_provider_cometapi.plugins.records import IMAGE_EXTENSIONS, StoredFile, TaskRef, read_stored_files
from airflow_provider_cometapi.storage import prepare_destination

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

REJECT_ALL = "Reject all"


@dataclass(frozen=True)
class Candidate:
    """One image up for review: its option label, its stored URI and its file name."""

    label: str
    uri: str
    name: str


def candidates(stored: Any) -> list[Candidate]:
    """
    The images in a storage task's result (its list of URIs, or any value holding them), in order.

    Sidecars and files that are not images are left out; each image is labelled ``Candidate N``.
    """
    found: dict[str, str] = {}
    for record in read_stored_files(stored, TaskRef("review"), _no_text):
        if (
            isinstance(record, StoredFile)
            and not record.is_sidecar
            and record.name.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS
        ):
            found.setdefault(record.uri, record.name)
    return [Candidate(f"Candidate {n}", uri, name) for n, (uri, name) in enumerate(found.items(), start=1)]


def _no_text(uri: str) -> str:  # storage results name their files; nothing to open
    raise LookupError(uri)


def gallery_file_url(dag_id: str, run_id: str, task: TaskRef, name: str, base_path: str = "") -> str:
    """The path under which the gallery serves a file that ``task`` stored, for the UI's browser."""
    query = f"?map_index={task.map_index}" if task.map_index >= 0 else ""
    segments = "/".join(quote(part, safe="") for part in (dag_id, run_id, task.task_id))
    return f"{base_path}{URL_PREFIX}/gallery/{segments}/files/{quote(name, safe='')}{query}"


def review_body(
    found: Sequence[Candidate],
    *,
    dag_id: str,
    run_id: str,
    outputs_of: TaskRef,
    intro: str = "",
    base_path: str = "",
) -> str:
    """
    The Markdown body of a review: an introduction, then each candidate's label and image.

    The images are the gallery's URLs of the files ``outputs_of`` stored, so they load in the
    reviewer's browser through Airflow's own login and permissions.
    """
    gallery = f"{base_path}{URL_PREFIX}/gallery/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
    lines = [intro.strip()] if intro.strip() else []
    lines.append(
        f"Pick the images to publish, or **{REJECT_ALL}**. "
        f"[All images of this run]({gallery}) open in the run's Images tab too."
    )
    # A table puts the candidates side by side, each image as wide as its column.
    cells = [f"![{c.label}]({gallery_file_url(dag_id, run_id, outputs_of, c.name, base_path)})" for c in found]
    lines.append(
        "\n".join(
            [
                "| " + " | ".join(f"**{c.label}**" for c in found) + " |",
                "|" + " --- |" * len(found),
                "| " + " | ".join(cells) + " |",
                "| " + " | ".join(f"`{c.name}`" for c in found) + " |",
            ]
        )
    )
    return "\n\n".join(lines)


def _base_path() -> str:
    from airflow_provider_cometapi.plugins.cometapi import _base_path as base

    return base()


class ReviewOutputsOperator(HITLOperator):
    """
    Ask a reviewer, in Airflow's UI, which of the images a storage task stored to keep.

    The task waits for an answer (on Airflow 3.3+ in the ``awaiting_input`` state, using no
    worker slot; before, deferred). Its body shows every image as served by the gallery; the
    options are ``Candidate 1`` ... ``Candidate N`` (several may be chosen) and ``Reject all``,
    which wins over any other choice. Return value (XCom)::

        {"chosen": ["<uri>", ...], "rejected": false, "chosen_options": [...],
         "responded_by_user": {...}, "responded_at": "..."}

    Fails (``ValueError``) when the storage task stored no image.

    :param outputs_of: the task id of the storage task (``SavePredictionOutputsOperator``) whose
        result lists the images.
    :param outputs_map_index: its map index, when that task is mapped.
    :param subject: the headline shown to the reviewer. Templated.
    :param intro: Markdown shown above the images. Templated.
    :param kwargs: ``HITLOperator`` arguments (``response_timeout``, ``assigned_users``,
        ``notifiers``...) and ``BaseOperator`` ones.
    """

    template_fields: Sequence[str] = ("subject", "body", "intro")

    def __init__(
        self,
        *,
        outputs_of: str,
        outputs_map_index: int = -1,
        subject: str = "Which images should be published?",
        intro: str = "",
        **kwargs: Any,
    ) -> None:
        for fixed in ("options", "multiple", "body"):
            if fixed in kwargs:
                raise TypeError(f"ReviewOutputsOperator sets {fixed!r} itself, from the stored images")
        # The real options are the images, known only once the storage task ran (see execute).
        super().__init__(subject=subject, options=[REJECT_ALL], multiple=True, **kwargs)
        self.outputs_of = outputs_of
        self.outputs_map_index = outputs_map_index
        self.intro = intro

    def _candidates(self, context: Context) -> list[Candidate]:
        stored = context["ti"].xcom_pull(task_ids=self.outputs_of, map_indexes=self.outputs_map_index)
        found = candidates(stored)
        if not found:
            from airflow_provider_cometapi.exceptions import InvalidParameterError

            raise InvalidParameterError(
                f"Task {self.outputs_of!r} stored no image to review (its result: {str(stored)[:200]}), so there is "
                "nothing to choose from. Set outputs_of to the task_id of a SavePredictionOutputsOperator upstream of "
                "this task in the same DAG run (with outputs_map_index for one map index of a mapped one)."
            )
        self.options = [candidate.label for candidate in found] + [REJECT_ALL]
        return found

    def execute(self, context: Context) -> Any:
        found = self._candidates(context)
        dag_run = context["dag_run"]
        self.body = review_body(
            found,
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            outputs_of=TaskRef(self.outputs_of, self.outputs_map_index),
            intro=self.intro,
            base_path=_base_path(),
        )
        self.log.info("Asking for a review of %d image(s): %s", len(found), ", ".join(c.name for c in found))
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        # A resumed task is a fresh operator: the options are rebuilt from the same stored result.
        found = self._candidates(context)
        answer = super().execute_complete(context, event)
        chosen_options = list(answer["chosen_options"])
        rejected = REJECT_ALL in chosen_options or not chosen_options
        chosen = [] if rejected else [c.uri for c in found if c.label in chosen_options]
        self.log.info(
            "%s", "The reviewer rejected every image." if rejected else f"The reviewer chose {len(chosen)}: {chosen}"
        )
        responded_at = answer.get("responded_at")
        return {
            "chosen": chosen,
            "rejected": rejected,
            "chosen_options": chosen_options,
            "responded_by_user": answer.get("responded_by_user"),
            "responded_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
        }


def publish_outputs(uris: Iterable[str], destination: Any) -> list[str]:
    """
    Copy stored outputs into ``destination`` under their own names; return the new URIs.

    Each copy is written as storage writes outputs: proven to lie directly in the destination,
    through a temporary file that only a complete copy replaces, so a re-run replaces the same
    files. Only outputs (``<prediction_id>_<n>.<ext>``) are copied: anything else is refused.

    :raises InvalidDestinationError, DestinationNotWritableError: as for the storage operator.
    :raises ValueError: a URI that is not a stored output.
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_cometapi.plugins.records import stored_file

    # The storage module's one atomic write (checks, temporary file, move into place).
    from airflow_provider_cometapi.storage import _store as store_file

    directory = prepare_destination(destination)
    published = []
    for uri in uris:
        record = stored_file(uri, TaskRef("publish"))
        if record is None or record.is_sidecar:
            from airflow_provider_cometapi.exceptions import InvalidParameterError

            raise InvalidParameterError(
                f"{str(uri)[:200]!r} is not a stored output (<prediction_id>_<n>.<ext>, as written by "
                "SavePredictionOutputsOperator), so it is not published. Pass the 'chosen' list of the review "
                "task's result, or URIs from a storage task's result."
            )
        with ObjectStoragePath(uri if "://" in uri else f"file://{uri}").open("rb") as source:
            target = store_file(directory, record.name, iter(lambda: source.read(1024 * 1024), b""))
        published.append(str(target))
    return published

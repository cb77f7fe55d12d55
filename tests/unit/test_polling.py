"""PredictionWatch and resolve_event on their own: no network, no Airflow run, milliseconds each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_cometapi.exceptions import (
    CometAPIError,
    CometAPITimeoutError,
    PredictionFailedError,
    PredictionNotFoundError,
    PredictionTimeoutError,
    PredictionWaitError,
    ServerError,
    UnexpectedEventError,
)
from airflow_provider_cometapi.models import MAX_LOG_CHARS, MAX_LOG_LINES, NewLogLines, Prediction
from airflow_provider_cometapi.polling import (
    EVENT_VERSION,
    MAX_FAILED_POLLS,
    LogMode,
    PredictionWatch,
    dropped_log_note,
    error_event,
    outcome_event,
    read_event,
    resolve_event,
)

EVENT_KEYS = {"v", "status", "prediction_id", "prediction", "outputs_shortened", "message"}


@dataclass
class RecordingLog:
    records: list[tuple[str, str]] = field(default_factory=list)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.records.append(("info", msg % args if args else str(msg)))

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.records.append(("warning", msg % args if args else str(msg)))

    def messages(self) -> list[str]:
        return [message for _, message in self.records]


def watch(mode: LogMode = LogMode.STREAM, deadline: float | None = None, interval: float = 5.0) -> PredictionWatch:
    return PredictionWatch("p1", interval, deadline, RecordingLog(), mode)


def records(w: PredictionWatch) -> list[str]:
    assert isinstance(w.log, RecordingLog)
    return w.log.messages()


def prediction(status: str = "processing", logs: str = "", **fields: Any) -> Prediction:
    return Prediction.from_api({"id": "p1", "status": status, "logs": logs, **fields})


def timeout_error() -> CometAPITimeoutError:
    return CometAPITimeoutError("The wait's deadline passed before GET /replicate/v1/predictions/p1 was answered.")


def server_error() -> ServerError:
    return ServerError("The CometAPI gateway failed (HTTP 503).", status_code=503)


def not_found() -> PredictionNotFoundError:
    return PredictionNotFoundError("Prediction 'p1' was not found (HTTP 404).", status_code=404)


# --- observe: statuses and outcomes ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "event_status"),
    [
        ("starting", None),
        ("processing", None),
        ("queued_elsewhere", None),  # unknown: still waiting
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("canceled", "canceled"),
        ("aborted", "aborted"),
    ],
)
def test_observe_ends_the_wait_only_on_a_terminal_status(status, event_status):
    w = watch()
    event = w.observe(prediction(status, output=["https://files.example/1.webp"] if status == "succeeded" else None))
    assert (event and event["status"]) == event_status
    assert w.last_status == status
    if event is not None:
        assert set(event) == EVENT_KEYS
        assert event["v"] == EVENT_VERSION
        assert event["prediction_id"] == "p1"
        assert event["prediction"]["status"] == status


def test_observe_logs_each_status_change_once_and_flags_unknown_ones():
    w = watch()
    for status in ("starting", "starting", "warming", "warming", "processing"):
        w.observe(prediction(status))
    assert records(w) == [
        "Prediction p1: status starting.",
        "Prediction p1: status warming (a status this provider does not know; still waiting).",
        "Prediction p1: status processing.",
    ]


def test_observe_resets_the_failures_in_a_row():
    w = watch(deadline=time.time() + 60)
    w.poll_failed(server_error())
    w.observe(prediction())
    assert (w.failed_polls, w.last_error) == (0, None)


def test_outcome_event_shortens_inline_outputs_and_says_so():
    inline = "data:image/webp;base64," + "A" * 5000
    event = outcome_event(prediction("succeeded", output=[inline]))
    assert event["outputs_shortened"] is True
    assert len(event["prediction"]["output"][0]) < 100
    assert "logs" not in event["prediction"]
    assert event["message"] == "Prediction p1 succeeded with 1 output(s)."


@pytest.mark.parametrize(
    ("error", "message"),
    [("NSFW content", "Prediction p1 failed: NSFW content"), (None, "Prediction p1 failed: no error message given")],
)
def test_outcome_event_of_a_failure_carries_its_error(error, message):
    assert outcome_event(prediction("failed", error=error))["message"] == message


# --- log modes ---------------------------------------------------------------------------

# (mode, logged while running, logged at the end, kept for the caller)
LOG_MODES = [
    (LogMode.STREAM, ["[p1] one", "[p1] two"], ["[p1] three"], ""),
    (LogMode.AT_END, [], ["[p1] one\ntwo\nthree"], ""),
    (LogMode.COLLECT, [], [], "one\ntwo\nthree"),
]


@pytest.mark.parametrize(("mode", "running", "at_end", "kept"), LOG_MODES, ids=[m.name for m, *_ in LOG_MODES])
def test_log_modes(mode, running, at_end, kept):
    w = watch(mode)
    w.observe(prediction("processing", "one\ntwo\nthr"))  # a partial line waits for its end
    assert [r for r in records(w) if r.startswith("[")] == running
    w.log.records.clear()
    w.observe(prediction("succeeded", "one\ntwo\nthree", output=["https://files.example/1.webp"]))
    assert [r for r in records(w) if r.startswith("[")] == at_end
    assert w.end_log == kept
    # The terminal status is the caller's to log in COLLECT mode, in its one record.
    assert ("Prediction p1: status succeeded." in records(w)) is (mode is not LogMode.COLLECT)


def test_stream_mode_logs_only_new_lines():
    w = watch()
    w.observe(prediction("processing", "a\nb\n"))
    w.observe(prediction("processing", "a\nb\nc\n"))
    w.observe(prediction("processing", "a\nb\nc\n"))
    assert [r for r in records(w) if r.startswith("[")] == ["[p1] a", "[p1] b", "[p1] c"]


def huge_log(lines: int) -> str:
    return "".join(f"line {index:07d}\n" for index in range(lines))


@pytest.mark.parametrize("mode", [LogMode.STREAM, LogMode.AT_END, LogMode.COLLECT])
def test_a_huge_log_gives_a_bounded_tail_and_one_line_saying_what_was_dropped(mode):
    log = huge_log(100_000)  # 1.3 MB, far over the kept 64 KiB
    w = watch(mode)
    w.observe(prediction("succeeded", log, output=["https://files.example/1.webp"]))
    lines = [r for r in records(w) if r.startswith("[")]
    notes = [r for r in (lines if mode is not LogMode.COLLECT else w.end_log.splitlines()) if "left out" in r]
    assert len(notes) == 1
    assert "characters" in notes[0] and "lines" in notes[0]
    if mode is LogMode.STREAM:
        assert len(lines) == 1 + MAX_LOG_LINES  # one record per line, never more than the cap
        assert lines[-1] == "[p1] line 0099999"  # the newest part is kept
    else:
        text = lines[0] if mode is LogMode.AT_END else w.end_log
        assert len(lines) == (1 if mode is LogMode.AT_END else 0)  # one record at most
        assert len(text) < MAX_LOG_CHARS
        assert text.count("\n") == MAX_LOG_LINES
        assert text.endswith("line 0099999")


def test_streaming_a_growing_huge_log_notes_each_drop_once():
    w = watch()
    w.observe(prediction("processing", huge_log(10)))
    w.observe(prediction("processing", huge_log(50_000)))
    w.observe(prediction("processing", huge_log(50_001)))
    notes = [r for r in records(w) if "left out" in r]
    assert len(notes) == 1
    assert records(w)[-1] == "[p1] line 0050000"


@pytest.mark.parametrize(
    ("chars", "lines", "note"),
    [
        (0, 0, ""),
        (1234567, 0, "1,234,567 characters of the prediction's log left out"),
        (0, 12, "12 lines of the prediction's log left out"),
        (5, 3, "5 characters and 3 lines of the prediction's log left out"),
    ],
)
def test_dropped_log_note(chars, lines, note):
    text = dropped_log_note(NewLogLines([], 0, chars, lines))
    assert text.startswith(note)
    assert bool(text) is bool(note)


# --- poll_failed, next_delay, timed_out ------------------------------------------------

# (errors in a row, deadline from now, the event status after the last one: None = keep polling)
FAILURES = [
    ([server_error()], 60, None),
    ([server_error()] * (MAX_FAILED_POLLS - 1), 60, None),
    ([server_error()] * MAX_FAILED_POLLS, 60, "error"),
    ([not_found()], 60, "error"),  # not transient: at once
    ([not_found()], -1, "error"),  # not transient: an error even past the deadline
    ([timeout_error()], -1, "timeout"),  # cut by the deadline: the timeout, which cancels
    ([server_error()], -1, "timeout"),  # any transient failure past the deadline
    ([server_error()], None, None),
    ([server_error()] * MAX_FAILED_POLLS, None, "error"),
]


@pytest.mark.parametrize(("errors", "deadline_in", "outcome"), FAILURES)
def test_poll_failed(errors: list[CometAPIError], deadline_in, outcome):
    w = watch(deadline=None if deadline_in is None else time.time() + deadline_in)
    events = [w.poll_failed(error) for error in errors]
    assert all(event is None for event in events[:-1])
    assert (events[-1] and events[-1]["status"]) == outcome
    if outcome == "error":
        assert errors[-1].message in events[-1]["message"]
        assert events[-1]["message"].startswith("Polling prediction p1 failed")
    if outcome == "timeout":
        assert "did not finish before the deadline" in events[-1]["message"]
        assert f"the last poll failed: {errors[-1].message}" in events[-1]["message"]


def test_the_last_allowed_failure_past_the_deadline_is_the_timeout_not_an_error():
    w = watch(deadline=time.time() + 60)
    for _ in range(MAX_FAILED_POLLS - 1):
        assert w.poll_failed(server_error()) is None
    w.deadline = time.time() - 0.5  # the last poll's retries ran into the deadline
    event = w.poll_failed(server_error())
    assert event is not None and event["status"] == "timeout"


def test_a_tolerated_failure_is_logged_as_a_warning():
    w = watch(deadline=time.time() + 60)
    w.poll_failed(server_error())
    assert w.log.records == [
        ("warning", "Polling prediction p1 failed (1 of 2 in a row allowed): The CometAPI gateway failed (HTTP 503).")
    ]


@pytest.mark.parametrize(
    ("polls", "failed", "deadline_in", "low", "high"),
    [
        (0, 0, None, 2.5, 7.5),  # the first sleep is spread over half an interval either way
        (1, 0, None, 2.5, 7.5),
        (2, 0, None, 5.0, 5.0),
        (0, 1, None, 5.0, 5.0),  # after a failure: the interval itself
        (2, 0, 1.0, 0.9, 1.0),  # cut to the deadline
    ],
)
def test_next_delay(polls, failed, deadline_in, low, high):
    w = watch(deadline=None if deadline_in is None else time.time() + deadline_in)
    w.polls, w.failed_polls = polls, failed
    for _ in range(20):
        delay = w.next_delay()
        assert delay is not None and low <= delay <= high


def test_next_delay_is_none_once_the_deadline_passed():
    assert watch(deadline=time.time() - 0.01).next_delay() is None


@pytest.mark.parametrize(
    ("last_status", "text"),
    [(None, "(last status: not polled)"), ("processing", "(last status: processing)")],
)
def test_timed_out(last_status, text):
    w = watch(deadline=time.time())
    w.last_status = last_status
    event = w.timed_out()
    assert event == {
        "v": EVENT_VERSION,
        "status": "timeout",
        "prediction_id": "p1",
        "prediction": None,
        "outputs_shortened": False,
        "message": f"Prediction p1 did not finish before the deadline {text}.",
    }


# --- read_event and resolve_event ------------------------------------------------------


class FakeHook:
    """Answers the one call resolve_event may make: fetching a prediction whose outputs were shortened."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        self.asked.append(prediction_id)
        return prediction("succeeded", output=["data:image/webp;base64," + "A" * 5000], id=prediction_id)


SUCCEEDED = {"id": "p1", "status": "succeeded", "output": ["https://files.example/1.webp"]}


@pytest.mark.parametrize(
    "event",
    [
        outcome_event(prediction("succeeded", output=["https://files.example/1.webp"])),
        # The previous release's shape: no version key, no outputs_shortened.
        {"status": "succeeded", "prediction_id": "p1", "prediction": SUCCEEDED, "message": "ok"},
        {"v": 1, "status": "succeeded", "prediction_id": "p1", "prediction": SUCCEEDED, "message": "ok"},
    ],
    ids=["this release", "previous release", "no outputs_shortened"],
)
def test_resolve_succeeded_returns_the_event_prediction_without_a_request(event):
    hook = FakeHook()
    result = resolve_event(event, hook)  # type: ignore[arg-type]
    assert result["id"] == "p1"
    assert result["output"] == ["https://files.example/1.webp"]
    assert hook.asked == []


@pytest.mark.parametrize("v", [1, None])
def test_resolve_succeeded_with_shortened_outputs_fetches_the_prediction(v):
    event = {"status": "succeeded", "prediction_id": "p1", "prediction": {"id": "p1"}, "outputs_shortened": True}
    if v is not None:
        event["v"] = v
    hook = FakeHook()
    result = resolve_event(event, hook)  # type: ignore[arg-type]
    assert hook.asked == ["p1"]
    assert len(result["output"][0]) > 5000


# (event, the error raised, a piece of its message)
RAISING = [
    ({"v": 1, "status": "failed", "prediction_id": "p1", "message": "p1 failed: NSFW"}, PredictionFailedError, "NSFW"),
    ({"status": "canceled", "prediction_id": "p1", "prediction": {}, "message": "c"}, PredictionFailedError, "c"),
    ({"status": "aborted", "prediction_id": "p1", "message": "boom"}, PredictionFailedError, "boom"),
    ({"status": "aborted", "prediction_id": "p1"}, PredictionFailedError, "Prediction p1 ended aborted."),
    ({"v": 1, "status": "timeout", "prediction_id": "p1", "message": "late"}, PredictionTimeoutError, "late"),
    ({"status": "timeout", "prediction_id": "p1", "prediction": None, "message": "late"}, PredictionTimeoutError, "l"),
    ({"v": 1, "status": "error", "prediction_id": "p1", "message": "gateway down"}, PredictionWaitError, "gateway"),
    ({"status": "error", "prediction_id": "p1", "prediction": None, "message": "down"}, PredictionWaitError, "down"),
    (None, UnexpectedEventError, "not a mapping"),
    ("succeeded", UnexpectedEventError, "not a mapping"),
    ([("status", "succeeded")], UnexpectedEventError, "not a mapping"),
    ({}, UnexpectedEventError, "its status None"),
    ({"status": "weird", "prediction_id": "p1"}, UnexpectedEventError, "its status 'weird'"),
    ({"status": "processing", "prediction_id": "p1"}, UnexpectedEventError, "its status 'processing'"),
    ({"status": "succeeded"}, UnexpectedEventError, "names no prediction"),
    ({"status": "failed", "prediction_id": ""}, UnexpectedEventError, "names no prediction"),
    ({"status": "failed", "prediction_id": 42}, UnexpectedEventError, "names no prediction"),
    ({"status": "succeeded", "prediction_id": "p1"}, UnexpectedEventError, "carries no prediction"),
    ({"status": "succeeded", "prediction_id": "p1", "prediction": "x"}, UnexpectedEventError, "not a mapping"),
    ({"v": 2, "status": "succeeded", "prediction_id": "p1", "prediction": {}}, UnexpectedEventError, "version 2"),
    ({"v": "1", "status": "failed", "prediction_id": "p1"}, UnexpectedEventError, "version '1'"),
    ({"status": "failed", "prediction_id": "p1", "message": 7}, UnexpectedEventError, "wrong type"),
    (
        {"status": "succeeded", "prediction_id": "p1", "prediction": {}, "outputs_shortened": 1},
        UnexpectedEventError,
        "type",
    ),
]


@pytest.mark.parametrize(("event", "error", "says"), RAISING, ids=[repr(row[0])[:60] for row in RAISING])
def test_resolve_event_raises(event, error, says):
    hook = FakeHook()
    with pytest.raises(error) as info:
        resolve_event(event, hook)  # type: ignore[arg-type]
    assert says in str(info.value)
    assert type(info.value) is error  # never the bare base class
    assert hook.asked == []
    if error is not UnexpectedEventError:
        assert info.value.prediction_id == "p1"  # type: ignore[attr-defined]
    if error is PredictionFailedError:
        assert info.value.status == event["status"]  # type: ignore[attr-defined]


def test_an_unexpected_event_is_shown_shortened():
    with pytest.raises(UnexpectedEventError) as info:
        read_event({"status": "weird", "blob": "x" * 100_000})
    assert len(str(info.value)) < 800
    assert "clear the task to wait again" in str(info.value)


@pytest.mark.parametrize(
    "event",
    [
        outcome_event(prediction("failed", error="e")),
        error_event("p1", "down"),
        watch().timed_out(),
        {"status": "timeout", "prediction_id": "p1", "prediction": None, "message": "late"},
    ],
)
def test_read_event_gives_this_release_shape(event):
    read = read_event(event)
    assert set(read) == EVENT_KEYS
    assert read["v"] == EVENT_VERSION
    assert read_event(read) == read

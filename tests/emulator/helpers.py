"""A thin requests client for the emulator's own tests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from airflow_provider_cometapi.emulator.testing import EmulatorProcess

SCHNELL = "black-forest-labs/flux-schnell"
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


def file_token(url: str) -> str:
    """The secret part of an output URL: ``.../files/<id>/<token>/out-<i>.<ext>``."""
    return url.rsplit("/", 2)[1]


def file_url(api: Api, prediction: dict[str, Any], index: int, ext: str) -> str:
    """The URL the emulator gives output ``index`` of ``prediction`` (which has an output)."""
    output = prediction["output"]
    token = file_token(output[0] if isinstance(output, list) else output)
    return f"{api.base}/files/{prediction['id']}/{token}/out-{index}.{ext}"


class Api:
    """Just enough of a client to drive the emulator over real HTTP."""

    def __init__(self, emu: EmulatorProcess) -> None:
        self.emu = emu
        self.base = emu.base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emu.api_key}"

    def create(
        self,
        model: str = SCHNELL,
        *,
        wait: int | str | None = None,
        control: dict[str, Any] | None = None,
        **input_: Any,
    ) -> requests.Response:
        input_.setdefault("prompt", "a red fox in the snow")
        if control is not None:
            input_["_emulator"] = control
        headers = {"Prefer": f"wait={wait}"} if wait is not None else {}
        return self.session.post(
            f"{self.base}/replicate/v1/models/{model}/predictions",
            json={"input": input_},
            headers=headers,
            timeout=70,
        )

    def create_ok(self, model: str = SCHNELL, **kwargs: Any) -> dict[str, Any]:
        resp = self.create(model, **kwargs)
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def get(self, pid: str) -> requests.Response:
        return self.session.get(f"{self.base}/replicate/v1/predictions/{pid}", timeout=10)

    def get_ok(self, pid: str) -> dict[str, Any]:
        resp = self.get(pid)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def cancel(self, pid: str) -> requests.Response:
        return self.session.post(f"{self.base}/replicate/v1/predictions/{pid}/cancel", timeout=10)

    def models(self) -> requests.Response:
        return self.session.get(f"{self.base}/v1/models", timeout=10)

    def wait_terminal(self, pid: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get_ok(pid)
            if body["status"] in TERMINAL:
                return body
            assert time.monotonic() < deadline, f"still {body['status']} after {timeout}s"
            time.sleep(0.05)

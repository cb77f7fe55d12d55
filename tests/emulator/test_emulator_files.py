"""Output files: real images, served without auth, expiring after --output-ttl."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import pytest
import requests
from PIL import Image

from airflow_provider_cometapi.emulator import images
from airflow_provider_cometapi.emulator.testing import EmulatorProcess

from .helpers import Api, file_token

if TYPE_CHECKING:
    from collections.abc import Iterator


def _download(url: str) -> requests.Response:
    # Deliberately without the Authorization header: files are served like a CDN's.
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp


@pytest.mark.parametrize(
    ("fmt", "mime", "pil_format"),
    [
        ("webp", "image/webp", "WEBP"),
        ("png", "image/png", "PNG"),
        ("jpg", "image/jpeg", "JPEG"),
        ("jpeg", "image/jpeg", "JPEG"),
    ],
)
def test_file_is_a_real_image_in_the_requested_format(api: Api, fmt: str, mime: str, pil_format: str) -> None:
    p = api.create_ok(output_format=fmt, control={"duration": 0})
    url = p["output"][0]
    assert url.endswith(f"/out-0.{fmt}")
    resp = _download(url)
    assert resp.headers["Content-Type"] == mime
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    image = Image.open(io.BytesIO(resp.content))
    assert image.format == pil_format
    assert image.size == (512, 512)
    assert api.emu.stats(detail=False)["file_downloads"] == 1


@pytest.mark.parametrize(
    ("model", "aspect_ratio", "size"),
    [
        ("black-forest-labs/flux-schnell", "16:9", (512, 288)),
        ("black-forest-labs/flux-schnell", "9:16", (288, 512)),
        ("black-forest-labs/flux-schnell", "21:9", (512, 219)),
        ("black-forest-labs/flux-schnell", "4:5", (410, 512)),
        ("black-forest-labs/flux-schnell", "3:2", (512, 341)),
        ("black-forest-labs/flux-kontext-pro", "match_input_image", (512, 512)),
    ],
)
def test_file_dimensions_follow_the_aspect_ratio(
    api: Api, model: str, aspect_ratio: str, size: tuple[int, int]
) -> None:
    p = api.create_ok(model, aspect_ratio=aspect_ratio, output_format="png", control={"duration": 0})
    url = p["output"][0] if isinstance(p["output"], list) else p["output"]
    assert Image.open(io.BytesIO(_download(url).content)).size == size


def test_output_quality_is_applied(api: Api) -> None:
    sizes = {}
    for quality in (5, 95):
        p = api.create_ok(output_format="jpg", output_quality=quality, seed=7, control={"duration": 0})
        sizes[quality] = len(_download(p["output"][0]).content)
    assert sizes[5] < sizes[95]


def test_images_are_deterministic_by_seed_prompt_and_index(api: Api) -> None:
    a = api.create_ok(prompt="a lighthouse", seed=11, num_outputs=2, control={"duration": 0})
    b = api.create_ok(prompt="a lighthouse", seed=11, num_outputs=2, control={"duration": 0})
    c = api.create_ok(prompt="a lighthouse", seed=12, control={"duration": 0})
    a0, a1, b0, c0 = (_download(u).content for u in (*a["output"], b["output"][0], c["output"][0]))
    assert a0 == b0
    assert a0 != a1
    assert a0 != c0


def test_files_404_when_not_available(api: Api) -> None:
    # A running prediction's files: test_emulator_auth.py, which can see the file token.
    done = api.create_ok(output_format="png", control={"duration": 0})
    token = file_token(done["output"][0])
    base = f"{api.base}/files"
    for url in (
        f"{base}/{done['id']}/{token}/out-1.png",  # index out of range
        f"{base}/{done['id']}/{token}/out-0.webp",  # wrong extension
        f"{base}/{done['id']}/{token}/image.png",  # not a file name the API uses
        f"{base}/{done['id']}/out-0.png",  # no file token
        f"{base}/{done['id']}/{token[:-1]}x/out-0.png",  # a wrong one
        f"{base}/{done['id']}/{token}{token}/out-0.png",
        f"{base}/nosuchprediction0000000000/{token}/out-0.png",
    ):
        assert requests.get(url, timeout=10).status_code == 404, url
    assert api.emu.stats(detail=False)["file_downloads"] == 0


def test_dimensions_helper() -> None:
    assert images.dimensions("1:1", 512) == (512, 512)
    assert images.dimensions("16:9", 1024) == (1024, 576)
    assert images.dimensions("9:21", 512) == (219, 512)
    assert images.dimensions("match_input_image", 300) == (300, 300)


def test_render_is_deterministic_and_cached() -> None:
    args = ("unit test prompt", 3, 0, "png", 80, 64, 48)
    first = images.render(*args)
    assert images.render(*args) is first  # LRU cache hit, no re-encode
    images.render.cache_clear()
    assert images.render(*args) == first
    assert Image.open(io.BytesIO(first)).size == (64, 48)


# -- a second emulator: tiny output TTL, small images, cancel unsupported ---------------------


@pytest.fixture(scope="module")
def short_lived() -> Iterator[EmulatorProcess]:
    args = ("--output-ttl", "0.6", "--image-size", "128", "--no-cancel")
    with EmulatorProcess(api_key="ttl-key", duration=0.1, starting_for=0, extra_args=args) as proc:
        yield proc


def test_outputs_expire_after_output_ttl(short_lived: EmulatorProcess) -> None:
    api = Api(short_lived)
    p = api.create_ok(wait=5)
    assert p["status"] == "succeeded"
    assert p["data_removed"] is False
    url = p["output"][0]
    assert Image.open(io.BytesIO(_download(url).content)).size == (128, 128)
    time.sleep(0.7)
    later = api.get_ok(p["id"])
    assert later["status"] == "succeeded"
    assert later["data_removed"] is True
    assert later["output"] is None
    assert requests.get(url, timeout=10).status_code == 404


def test_data_uri_outputs_expire_too(short_lived: EmulatorProcess) -> None:
    api = Api(short_lived)
    p = api.create_ok(control={"duration": 0, "data_uri": True})
    assert p["output"][0].startswith("data:")
    time.sleep(0.7)
    assert api.get_ok(p["id"])["output"] is None


def test_no_cancel_answers_404(short_lived: EmulatorProcess) -> None:
    api = Api(short_lived)
    p = api.create_ok(control={"duration": 10})
    resp = api.cancel(p["id"])
    assert resp.status_code == 404
    assert resp.json()["status"] == 404
    assert api.get_ok(p["id"])["status"] in ("starting", "processing")
    # The attempt is still counted, so tests can prove the client tried.
    assert short_lived.stats()["predictions"][p["id"]]["cancels"] == 1

"""The demo page (python -m lumiere_jax.demo) on a trained smoke run: its checks in-process, then the page in a real
browser, Debian's Chromium driven by Playwright: a clip of the requested length plays, two tabs at once both get
theirs, a bad request shows one line and the server goes on serving, and bad uploads are refused in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Iterator

import gradio as gr
import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from lumiere_jax import config_lib, demo, video_io

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
# The browser and server helpers the install-to-first-clip benchmark uses too.
from demo_first_clip import CHROMIUM, CHROMIUM_ARGS, free_port, stop_server, wait_for_page  # noqa: E402

SERVER_START_S = 180  # imports, the run's weights and MiniLM on a loaded 2-core CPU
REQUEST_S = 120  # a first request compiles the sampler
STEPS = 48  # denoising steps: over a second of them at the smoke size, long enough to see the step count


def checked_only(workdir: str, tmp_path) -> demo.Demo:
    """A Demo on the run's config without its weights: enough for every check, which runs before any sampling."""
    model = demo.Model(workdir, config_lib.run_config(workdir), sampler=None, step=0)
    return demo.Demo(model, None, demo.StepReporter(), str(tmp_path))


def page_error(call, *args) -> str:
    with pytest.raises(gr.Error) as error:
        call(*args)
    return error.value.message


def test_page_messages_name_fields_and_uploads():
    error = ValueError("--video=/srv/uploads/abc/clip.mp4 has 2 frames; give --frames >= 4 or "
                       "--config.sample.guidance=2.\nsecond line")
    assert demo.page_message(error, ["/srv/uploads/abc/clip.mp4"]) == (
        "Video clip.mp4 has 2 frames; give Frames >= 4 or Guidance 2.")


def test_bad_requests_are_one_line_before_anything_loads(trained_workdir, tmp_path):
    """The command line's checks, worded with the page's fields; the sampler (None here) is never reached."""
    page = checked_only(trained_workdir, tmp_path)
    t2v = page.text_to_video
    assert page_error(t2v, "a red circle", "", 0, float("nan"), 4, None) == "Guidance nan must be a finite number."
    assert page_error(t2v, "a red circle", "", 0, 3, 4, 0).startswith("Frames 0 must be a positive number")
    assert page_error(t2v, "a red circle", "", 0, 3, 2.5, None) == "Steps 2.5 must be a whole number."
    assert page_error(t2v, "a red circle", "", -1, 3, 4, None) == "Seed -1 must be in [0, 2**63)."
    assert page_error(t2v, "  ", "", 0, 3, 4, None).startswith("Prompt is empty")
    assert page_error(t2v, "a red circle", "two: a blue square", 0, 3, 4, 8).startswith("Story 'two: a blue square'")
    assert page_error(page.image_to_video, None, "a red circle", 0, 3, 4).startswith(
        "Image to video needs the conditional model")
    assert page_error(page.edit_video, None, "a red circle", 0.5, 0, 3, 4).startswith("Upload a clip to edit")
    still = str(tmp_path / "still.png")
    video_io.write_video(still, np.zeros((1, 16, 16, 3), np.uint8), 8)
    assert page_error(page.edit_video, still, "a red circle", 0.5, 0, 3, 4).startswith("Video still.png has 1 frames")


@pytest.fixture
def server(trained_workdir, tmp_path) -> Iterator[str]:
    """`python -m lumiere_jax.demo --workdir=<smoke run>` on a free localhost port; its URL. Stopped with SIGTERM."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "lumiere_jax.demo", f"--workdir={trained_workdir}",
                                    f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(process, url, str(log_path), SERVER_START_S)
        yield url
        assert process.poll() is None, f"the demo server died:\n{log_path.read_text()[-3000:]}"
    finally:
        stop_server(process)


def generate(page: Page, frames: str, seed: str) -> None:
    """Presses Generate in the text-to-video tab with these frames and seed (the other fields as they are)."""
    page.locator("#t2v_frames input").fill(frames)
    page.locator("#t2v_seed input").fill(seed)
    page.locator("#t2v_generate").click()


def served_frames(page: Page, url: str, path) -> int:
    """The frames of the clip the page serves at url, decoded from the bytes the browser gets."""
    response = page.request.get(url)
    assert response.ok, url
    path.write_bytes(response.body())
    return len(video_io.read_video(str(path)))


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"the browser test drives Debian's Chromium at {CHROMIUM} "
                    f"(apt-get install chromium); it is not installed")
def test_the_page_in_a_browser(server, trained_workdir, tmp_path):
    window = config_lib.run_config(trained_workdir).data.num_frames
    frames = 2 * window  # a long video: the page's frame count reaches the sampler
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.goto(server)
            page.locator("#t2v_prompt textarea").fill("a blue square moving up")
            page.locator("#t2v_steps input[type=number]").fill(str(STEPS))
            generate(page, str(frames), "0")
            # The first request of a shape says it compiles, then counts the steps; the clip plays in the page.
            expect(page.get_by_text(re.compile("Compiling the sampler")).first).to_be_visible(timeout=REQUEST_S * 1000)
            expect(page.get_by_text(re.compile(rf"Denoising step \d+ of {STEPS}")).first).to_be_visible(
                timeout=REQUEST_S * 1000)
            status = page.locator("#t2v_status textarea")
            expect(status).to_have_value(re.compile(rf"^{frames} frames .*compiled the sampler"),
                                         timeout=REQUEST_S * 1000)
            video = page.locator("#t2v_video video")
            page.wait_for_function("v => v.readyState >= 2 && v.currentTime > 0", arg=video.element_handle(),
                                   timeout=60_000)
            fps = config_lib.run_config(trained_workdir).sample.fps
            assert video.evaluate("v => v.duration") == pytest.approx(frames / fps, abs=0.05)
            assert served_frames(page, video.get_attribute("src"), tmp_path / "view.mp4") == frames
            downloads = page.locator("#t2v_files a[download]")
            expect(downloads).to_have_count(2, timeout=60_000)
            names = {os.path.basename(a.get_attribute("href")) for a in downloads.all()}
            assert names == {"clip.mp4", "clip.gif"}

            # Two tabs at once: they queue, and both get their clip from the compiled sampler.
            others = [browser.new_page(), browser.new_page()]
            for seed, other in enumerate(others, 1):
                other.goto(server)
                other.locator("#t2v_steps input[type=number]").fill(str(STEPS))
                generate(other, str(frames), str(seed))
            for seed, other in enumerate(others, 1):
                expect(other.locator("#t2v_status textarea")).to_have_value(
                    re.compile(rf"^{frames} frames .*reused.*seed {seed}\.$"), timeout=REQUEST_S * 1000)

            # A bad request is one line in the page; the server goes on serving the next.
            generate(page, "0", "5")
            expect(page.get_by_text("Frames 0 must be a positive number of frames")).to_be_visible(timeout=60_000)
            generate(page, str(frames), "6")
            expect(status).to_have_value(re.compile(r"seed 6\.$"), timeout=REQUEST_S * 1000)

            # A fresh page's fields as they are (frames untouched) make a clip of the training length.
            fresh = browser.new_page()
            fresh.goto(server)
            fresh.locator("#t2v_steps input[type=number]").fill(str(STEPS))
            fresh.locator("#t2v_generate").click()
            expect(fresh.locator("#t2v_status textarea")).to_have_value(re.compile(rf"^{window} frames .*seed 0\.$"),
                                                                        timeout=REQUEST_S * 1000)

            # Bad uploads in the editing tab: an image (refused as it arrives), then a file that is no video.
            page.get_by_role("tab", name="Edit a video").click()
            still = tmp_path / "still.png"
            video_io.write_video(str(still), np.zeros((1, 16, 16, 3), np.uint8), 8)
            page.locator("#edit_video input[type=file]").set_input_files(str(still))
            expect(page.get_by_text(re.compile(r"Invalid file type: still\.png"))).to_be_visible(timeout=60_000)
            corrupt = tmp_path / "corrupt.mp4"
            corrupt.write_bytes(b"\x00not a video" * 200)
            page.locator("#edit_video input[type=file]").set_input_files(str(corrupt))
            expect(page.locator("#edit_video").get_by_role("cell", name="corrupt.mp4")).to_be_visible(timeout=60_000)
            page.locator("#edit_generate").click()
            expect(page.get_by_text("Video corrupt.mp4 cannot be decoded")).to_be_visible(timeout=60_000)
        finally:
            browser.close()

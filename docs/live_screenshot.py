"""Take the README's screenshot of the live run page, during a real run against the fake server.

    python docs/live_screenshot.py [--out docs/dashboard-live.png] [--delay 0.3] [--after 25]

Starts `tests/fake_openai_server.py`'s server (each reply delayed by --delay seconds), runs the
real CLI (`reflex-dspy optimize`, structural strategy, the routing task of the tests) in its own
process, serves the dashboard over its run directory, opens the run in Debian's Chromium with
Playwright and, --after seconds later, while the run is still going, saves the page. The models
are the deterministic fake, not a real model: the picture shows the page, not a result.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dashboard_kit import cli_env, dashboard, write_task  # noqa: E402
from fake_openai_server import FakeOpenAI  # noqa: E402

from reflex_dspy.tracking.store import RunStore  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "dashboard-live.png"))
    parser.add_argument("--delay", type=float, default=0.3, help="seconds the fake server waits per reply")
    parser.add_argument("--after", type=float, default=25.0, help="seconds after the page opens")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="reflex-live-shot-"))
    data, prompt = write_task(tmp / "task", n_per_label=8)
    run_dir = tmp / "runs"
    argv = [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(data), str(prompt), "-m", "openai/fake-task",
            "--reasoning-model", "openai/fake-reasoner", "--metric", "exact", "--run-dir", str(run_dir),
            "-s", "structural", "--max-iterations", "4", "--threshold", "1.0", "--max-workers", "2"]
    with FakeOpenAI(delay=args.delay) as fake:
        proc = subprocess.Popen(argv, env=cli_env(fake.base_url, tmp / "cache"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while not RunStore(run_dir).runs():
                if proc.poll() is not None:
                    raise SystemExit("the run ended before it was recorded")
                time.sleep(0.2)
            with dashboard(run_dir) as server, sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(server.url + "?poll=500#/runs/001")
                time.sleep(args.after)
                status = RunStore(run_dir).runs()[0].status
                page.screenshot(path=args.out)
                browser.close()
        finally:
            proc.kill()
            proc.wait()
    print(f"wrote {args.out} (run status when taken: {status})")
    return 0 if status == "running" else 1


if __name__ == "__main__":
    sys.exit(main())

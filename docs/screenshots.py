"""Remake the dashboard screenshots of the README from any run directory.

    python docs/screenshots.py --run-dir .reflex [--run 003] [--iteration 2] [--out docs/]

Serves the dashboard over RUN_DIR on a free loopback port, drives Debian's Chromium with
Playwright (`pip install -e ".[dev]"`, `apt-get install chromium`) and writes:
dashboard-runs.png (runs list), dashboard-run.png (a run: tiles and flow graph),
dashboard-diff.png (an iteration's Diff tab) and dashboard-branch.png (the branch dialog).
The run shown is --run, else the completed run with the most iterations; the iteration is
--iteration, else the first one whose prompt gained lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.request
from pathlib import Path

from reflex_dspy.dashboard.server import DashboardServer

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _get(base: str, path: str):
    with urllib.request.urlopen(base + path.lstrip("/"), timeout=30) as response:
        return json.load(response)


def pick_run(base: str) -> str:
    runs = [r for r in _get(base, "/api/runs")["runs"] if r["status"] == "completed"] or _get(base, "/api/runs")["runs"]
    if not runs:
        sys.exit("screenshots: no runs in this run directory")
    return max(runs, key=lambda r: (r["iterations"], int(r["id"])))["id"]


def pick_iteration(base: str, run_id: str) -> int:
    cards = _get(base, f"/api/runs/{run_id}")["iteration_cards"]
    for card in cards:
        detail = _get(base, f"/api/runs/{run_id}/iterations/{card['iteration']}")
        if any(line["op"] == "+" for p in detail["predictors"] for line in p["diff"]):
            return card["iteration"]
    return cards[0]["iteration"] if cards else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=".reflex")
    parser.add_argument("--run", help="run id to show (default: the completed run with the most iterations)")
    parser.add_argument("--iteration", type=int, help="iteration for the diff (default: the first that added lines)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    server = DashboardServer(args.run_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base, out = server.url, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = (args.run or pick_run(base)).zfill(3)
    iteration = args.iteration if args.iteration is not None else pick_iteration(base, run_id)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(base)
            page.wait_for_selector("tr.run-row")
            page.screenshot(path=out / "dashboard-runs.png")

            page.goto(f"{base}#/runs/{run_id}")
            page.wait_for_selector("#iteration-detail .iteration")
            page.screenshot(path=out / "dashboard-run.png", full_page=True)

            page.goto(f"{base}#/runs/{run_id}/{iteration}")
            page.wait_for_selector(f"#iteration-detail .iteration[data-iteration='{iteration}']")
            page.click("[data-tab='diff']")
            page.wait_for_selector("#prompt-diff")
            page.screenshot(path=out / "dashboard-diff.png", full_page=True)

            card = page.locator(f"#flow .iter-card[data-iteration='{iteration}']")
            card.hover()
            card.locator(".branch-btn").click()
            page.wait_for_selector("#branch-modal")
            page.screenshot(path=out / "dashboard-branch.png")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    for name in ("runs", "run", "diff", "branch"):
        print(out / f"dashboard-{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Remake the README's two MLflow screenshots from a real run against the fake OpenAI server.

    python docs/mlflow_screenshots.py [--out docs/] [--chromium /usr/bin/chromium]

Starts `tests/fake_openai_server.py` and a local `mlflow server` (SQLite backend,
`--serve-artifacts`) on loopback ports, runs the real CLI (`reflex-dspy optimize ... -s iterative
--max-iterations 3 --mlflow-tracking-uri URL --register-prompt support-routing`), then drives
Debian's Chromium with Playwright over MLflow's own UI and writes:

- mlflow-runs.png: the experiment's runs, the reflex run expanded to its nested iteration runs;
- mlflow-prompt.png: the registered prompt, its new version with the `reflex-best` alias.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dashboard_kit import cli_env, write_task  # noqa: E402
from fake_openai_server import FakeOpenAI  # noqa: E402
from mlflow_server import start_server, stop_server  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PROMPT_NAME = "support-routing"


def record_run(work: Path, fake_url: str, mlflow_url: str) -> str:
    """One CLI optimization recorded on the server; returns its stdout (the summary)."""
    data, prompt = write_task(work / "task", n_per_label=4)
    argv = [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(data), str(prompt), "-m", "openai/fake-task",
            "--reasoning-model", "openai/fake-reasoner", "--metric", "exact", "-s", "iterative",
            "--max-iterations", "3", "--run-dir", str(work / "reflex"), "--mlflow-tracking-uri", mlflow_url,
            "--register-prompt", PROMPT_NAME]
    done = subprocess.run(argv, env=cli_env(fake_url, work / "cache"), capture_output=True, text=True, timeout=600)
    if done.returncode:
        sys.exit(done.stdout + done.stderr)
    return done.stdout


def _experiment_id(mlflow_url: str) -> str:
    query = urllib.request.quote("reflex")
    with urllib.request.urlopen(f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={query}") as r:
        return json.load(r)["experiment"]["experiment_id"]


def _open(page, url: str, settle_ms: int = 8000) -> None:
    """MLflow's UI keeps polling (no network idle): load, then give it a fixed time to render."""
    page.goto(url)
    page.wait_for_timeout(settle_ms)
    page.mouse.click(1463, 36)  # close the "MLflow Assistant" side panel (top right at this viewport)
    page.wait_for_timeout(2000)


def shoot(mlflow_url: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    experiment = _experiment_id(mlflow_url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 820})
        _open(page, f"{mlflow_url}/#/experiments/{experiment}/runs?workflowType=machine_learning")
        page.mouse.click(318, 265)  # the first run's expander: show its nested iteration runs
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "mlflow-runs.png"))
        _open(page, f"{mlflow_url}/#/prompts/{PROMPT_NAME}")
        page.screenshot(path=str(out / "mlflow-prompt.png"))
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    fake = FakeOpenAI().start()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            print(record_run(Path(tmp), fake.base_url, url))
            shoot(url, Path(args.out), args.chromium)
        finally:
            stop_server(proc)
            fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

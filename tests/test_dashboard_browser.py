"""The dashboard page in headless Chromium (Debian's `chromium`, driven by Playwright), over runs
made by the real CLI against a fake OpenAI-compatible server: the runs list, a run's flow graph,
the diff tab, starting a branch from the page (a real `reflex-dspy branch` process), a live run
gaining iterations, and the empty / interrupted / server-down states.

Without Chromium or Playwright these tests skip, unless REFLEX_BROWSER_TESTS=require (CI), where
they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from dashboard_kit import cli_env, cli_optimize, compile_run, dashboard, interrupting, write_task
from fake_openai_server import FakeOpenAI
from fakes import fake_lm

from reflex_dspy.tracking.store import RunStore

CHROMIUM = os.environ.get("REFLEX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("REFLEX_BROWSER_TESTS") == "require"
# No val split: the fake task model then climbs 0.7 → 0.9 → 1.0 on train, one rule per iteration.
FLAGS = ("-s", "iterative", "--max-iterations", "3", "--threshold", "1.0", "--val-split", "0")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set REFLEX_CHROMIUM)"
    return None


if (_why := _missing()) is not None:
    if REQUIRED:
        pytest.fail(f"REFLEX_BROWSER_TESTS=require but {_why}", pytrace=False)
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One CLI run (iterative, 3 iterations) over the fake server, and a dashboard whose branch
    processes reach the same server."""
    tmp = tmp_path_factory.mktemp("browser")
    fake = FakeOpenAI().start()
    data, prompt = write_task(tmp)
    env = cli_env(fake.base_url, tmp / "cache")
    run_dir = tmp / "rd"
    cli_optimize(run_dir, data, prompt, env, *FLAGS)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with dashboard(run_dir) as server:
            yield type("Site", (), {"url": server.url, "server": server, "run_dir": run_dir, "data": data,
                                    "prompt": prompt, "tmp": tmp, "fake": fake})
    fake.stop()


def test_runs_list_then_a_run_with_its_flow_graph(site, page):
    page.goto(site.url)
    row = page.locator("tr.run-row[data-run='001']")
    expect(row).to_contain_text("completed")
    headers = page.locator("table.runs th").all_inner_texts()
    assert headers == ["ID", "Created", "Status", "Strategy", "Model", "Iters", "Baseline", "Best", "Final", "Target",
                       "Dataset", "Reasoning"]
    expect(row).to_contain_text("openai/fake-task")
    expect(row).to_contain_text("openai/fake-reasoner")
    expect(row.locator("td.best")).to_have_css("color", "rgb(21, 128, 61)")  # best in green
    row.locator("button.dataset").click()  # click to reveal the full path
    expect(row.locator("button.dataset")).to_have_text(str(site.data.resolve()))
    row.locator("td.id").click()
    expect(page).to_have_url(re.compile(r"#/runs/001$"))
    expect(page.locator("#tiles .tile")).to_have_count(6)
    expect(page.locator("#baseline-pill")).to_contain_text("target 1.00")
    expect(page.locator(".phase-header")).to_have_text(["iterative ×3"])
    cards = page.locator("#flow .iter-card")
    expect(cards).to_have_count(3)
    expect(page.locator("#flow .iter-card .star")).to_have_count(1)
    expect(page.locator("#best-pill")).to_contain_text("Selected")  # a finished run: the run's pick
    expect(page.locator("#tiles .tile-best")).to_contain_text("Selected")
    expect(page.locator("#test-result")).to_contain_text("Held-out test")
    page.reload()  # the URL is bookmarkable
    expect(page.locator("#flow .iter-card")).to_have_count(3)


def test_diff_tab_shows_the_added_line_in_green(site, page):
    page.goto(site.url + "#/runs/001")
    page.locator("#flow .iter-card[data-iteration='2']").click()
    expect(page).to_have_url(re.compile(r"#/runs/001/2$"))
    expect(page.locator("#iteration-detail h2")).to_have_text("Iteration 2")
    page.locator("[data-tab='diff']").click()
    added = page.locator("#prompt-diff .diff-add")
    expect(added).to_have_text(["+ - Rule 2: Do not explain your choice."])
    expect(added).to_have_css("background-color", "rgb(220, 252, 231)")
    expect(page.locator("#prompt-diff .diff-del")).to_have_count(0)
    page.locator("[data-tab='initial']").click()
    expect(page.locator("#prompt-initial")).to_have_text("Classify the customer message.")


def test_branch_from_a_card_appears_under_its_parent(site, page):
    page.goto(site.url + "?poll=500#/runs/001")
    card = page.locator("#flow .iter-card[data-iteration='1']")
    card.hover()
    card.locator(".branch-btn").click()
    expect(page.locator("#branch-modal")).to_be_visible()
    page.select_option("#branch-strategy", "fewshot")
    page.fill("#branch-max", "1")
    page.click("#branch-start")
    expect(page.locator("#branch-modal")).to_have_count(0)
    expect(page.locator("#toasts")).to_contain_text("Branch of 001/1 started")
    expect(page.locator("#toasts a[href='#/runs/002']")).to_be_visible(timeout=60_000)
    page.goto(site.url + "?poll=500#/")
    rows = page.locator("tr.run-row")
    expect(rows).to_have_count(2)
    assert [r.get_attribute("data-run") for r in rows.all()] == ["001", "002"]  # nested under its parent
    expect(rows.nth(1).locator(".branch-badge")).to_have_text("⎇ 001/1")
    expect(rows.nth(1)).to_contain_text("completed", timeout=60_000)  # the page updates by itself
    branch = RunStore(site.run_dir).get_run("002")
    assert branch.load_config()["branched_from"] == {"run_id": "001", "iteration": 1}
    assert branch.load_config()["optimizer_config"]["strategy"] == "fewshot"


def test_a_live_run_gains_iterations_without_reload(site, page):
    slow = FakeOpenAI(delay=0.15).start()
    run_dir = site.tmp / "live"
    data, prompt = write_task(site.tmp / "live-task", n_per_label=6)
    proc = cli_optimize(run_dir, data, prompt, cli_env(slow.base_url, site.tmp / "live-cache"), *FLAGS,
                        "--max-workers", "2", wait=False)
    try:
        deadline = time.monotonic() + 60
        while not RunStore(run_dir).runs() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the page opens once the run exists (it starts after the CLI's imports)
        with dashboard(run_dir) as server:
            page.goto(server.url + "?poll=400#/runs/001")
            badge = page.locator(".run-header .badge")
            expect(badge).to_have_text("running", timeout=60_000)
            cards = page.locator("#flow .iter-card")
            seen = cards.count()
            assert seen < 3
            expect(cards).to_have_count(seen + 1, timeout=60_000)  # a new card, no reload
            expect(badge).to_have_text("completed", timeout=90_000)
            expect(cards).to_have_count(3)
            expect(page.locator("#test-result")).to_contain_text("Held-out test:")
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait(10)
        slow.stop()


def test_empty_then_interrupted_then_server_down(tmp_path, page):
    with dashboard(tmp_path) as server:
        page.goto(server.url + "?poll=300")
        expect(page.locator("#empty-state")).to_contain_text("reflex-dspy optimize DATA PROMPT")
        with pytest.raises(KeyboardInterrupt):
            compile_run(tmp_path, task=fake_lm(interrupting, name="fake/dash-task"), max_workers=1)
        row = page.locator("tr.run-row[data-run='001']")  # appears without a reload
        expect(row.locator(".badge")).to_have_text("interrupted")
        expect(row.locator(".badge")).to_have_css("color", "rgb(161, 98, 7)")  # yellow
        row.click()
        expect(page.locator(".notice-interrupted")).to_contain_text("reflex-dspy optimize --resume-from 001")
        page.goto(server.url + "?poll=300#/")
        expect(row).to_be_visible()
        server.shutdown()
        server.server_close()
        page.locator("#refresh").click()
        expect(page.locator("#server-down")).to_contain_text("not reachable")


# -- the live page (issue 23): trials feed, candidates, staleness, failed --------------------------
def test_live_page_feed_candidates_then_silence_then_interrupted(site, page):
    """A slow real run: the feed and the candidate list grow without a reload; SIGSTOP shows "no word
    from the runner", SIGCONT clears it; a killed runner is interrupted with its resume command."""
    import os
    import signal

    slow = FakeOpenAI(delay=0.1).start()
    run_dir = site.tmp / "live-feed"
    data, prompt = write_task(site.tmp / "live-feed-task", n_per_label=6)
    env = {**cli_env(slow.base_url, site.tmp / "live-feed-cache"), "REFLEX_HEARTBEAT_SECONDS": "0.3"}
    proc = cli_optimize(run_dir, data, prompt, env, *FLAGS, "--max-workers", "2", wait=False)
    try:
        deadline = time.monotonic() + 60
        while not RunStore(run_dir).runs() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        with dashboard(run_dir) as server:
            page.goto(server.url + "?poll=400#/runs/001")
            expect(page.locator(".run-header .badge")).to_have_text("running", timeout=60_000)
            expect(page.locator("#phase-chip")).to_be_visible()
            feed = page.locator("#trials-feed li")
            expect(feed.first).to_be_visible()
            seen = feed.count()
            expect(page.locator("#trials-feed li.trial").nth(seen)).to_be_attached()  # grows, no reload
            expect(feed.first).to_contain_text("candidate #")
            expect(page.locator("#candidates tbody tr").nth(1)).to_be_attached()  # a proposal joined #0
            expect(page.locator("#best-trend polyline.trend-best")).to_be_attached()
            os.kill(proc.pid, signal.SIGSTOP)
            expect(page.locator("#stale-notice")).to_contain_text("No word from the runner for", timeout=15_000)
            os.kill(proc.pid, signal.SIGCONT)
            expect(page.locator("#stale-notice")).to_have_count(0, timeout=15_000)
            proc.kill()
            proc.wait(10)
            expect(page.locator(".run-header .badge")).to_have_text("interrupted")
            page.locator("#refresh").click()  # polling stopped with the run: one manual refresh
            expect(page.locator(".notice-interrupted")).to_contain_text("reflex-dspy optimize --resume-from 001")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)
        slow.stop()


def test_failed_run_shows_its_reason_and_what_to_do(tmp_path, page):
    from dashboard_kit import INITIAL, reasoner_respond

    from reflex_dspy import Reflex
    from reflex_dspy.adapters import program_from_prompt

    def broken(system: str, messages: list[dict]) -> str:
        raise ValueError("no answer")

    optimizer = Reflex("exact", task_lm=fake_lm(broken, name="fake/task"), max_workers=1, mlflow=False,
                       reasoning_lm=fake_lm(reasoner_respond, name="fake/reasoner"), run_dir=tmp_path,
                       metadata={"dataset_path": str(tmp_path / "data.jsonl")})
    with pytest.raises(Exception, match="every test example failed"):
        from conftest import routing_examples

        optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(3))
    with dashboard(tmp_path) as server:
        page.goto(server.url)
        badge = page.locator("tr.run-row[data-run='001'] .badge")
        expect(badge).to_have_text("failed")
        expect(badge).to_have_css("color", "rgb(185, 28, 28)")  # red
        badge.click()
        notice = page.locator("#failed-notice")
        expect(notice).to_contain_text("Failed: every test example failed")
        expect(notice).to_contain_text("reflex-dspy optimize --resume-from 001")
        expect(page.locator("#trials-feed li.trial-failed").first).to_contain_text("no answer")


def test_a_run_aevyra_reflex_wrote_reads_without_holes(tmp_path, page):
    """Their baseline.json has no sample count or split, their result.json no selected candidate:
    before, the page said "on null-sample null" and "selected iteration null (best on ?: 1.0000)"."""
    from test_layout_compat import their_runs

    root, _ = their_runs.__wrapped__(tmp_path)
    with dashboard(root) as server:
        page.goto(f"{server.url}/#/runs/001")
        expect(page.locator("#test-result")).to_contain_text("· best score 1.0000 ·")
        for hole in ("null", "undefined", "?:"):
            expect(page.locator("#tiles")).not_to_contain_text(hole)
            expect(page.locator("#test-result")).not_to_contain_text(hole)
        expect(page.locator("#tiles .tile").first).to_contain_text("on test")

"""The web viewer in a real headless Chromium (Debian's ``chromium`` package)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import (
    API_KEY,
    MP_HEADERS,
    ServerThread,
    make_run,
    multipart_with_attachment,
    realistic_trace,
    three_service_trace,
    wire,
)

from tracestitch.collector.rollups import RELATIVE_ERROR

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "viewer.png"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not installed (apt-get install chromium; `make test` installs it)",
)


@contextmanager
def _browser_page(srv: ServerThread) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(
            viewport={"width": 1400, "height": 860}, accept_downloads=True
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        pg.errors = errors  # type: ignore[attr-defined]
        # Nothing but the collector may be contacted (blob: URLs are the page's own memory):
        # fail loudly on any other request.
        outside: list[str] = []
        pg.on(
            "request",
            lambda req: (
                None
                if req.url.startswith((srv.url + "/", "blob:" + srv.url + "/"))
                else outside.append(req.url)
            ),
        )
        pg.outside = outside  # type: ignore[attr-defined]
        yield pg
        browser.close()


@pytest.fixture
def page(open_server: ServerThread) -> Iterator[object]:
    with _browser_page(open_server) as pg:
        yield pg


@pytest.fixture
def keyed_page(server: ServerThread) -> Iterator[object]:
    """A browser on the collector that requires ``API_KEY``."""
    with _browser_page(server) as pg:
        yield pg


def test_trace_list_and_trace_page(open_server: ServerThread, page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    runs = three_service_trace()
    resp = httpx.post(open_server.url + "/runs/batch", json={"post": [wire(r) for r in runs]})
    assert resp.status_code == 200
    trace_id = runs[0]["id"]

    page.goto(open_server.url + "/")
    row = page.locator(f"tr[data-trace-id='{trace_id}']")
    expect(row).to_be_visible()
    expect(row.locator(".root-name")).to_have_text("GET /checkout")
    expect(row.locator(".chip")).to_have_count(3)
    row.locator("a").click()

    page.wait_for_url(f"**/traces/{trace_id}")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(5)
    assert [int(d) for d in rows.evaluate_all("rs => rs.map(r => r.dataset.depth)")] == [
        0,
        1,
        2,
        2,
        1,
    ]
    names = rows.locator(".run-name").all_text_contents()
    assert names == ["GET /checkout", "POST /orders", "select order", "summarise", "POST /payments"]
    # Waterfall: bars placed on a shared time axis, one colour per service.
    geometry = rows.locator(".bar").evaluate_all(
        "bs => bs.map(b => [parseFloat(b.style.left), parseFloat(b.style.width),"
        " b.style.background])"
    )
    assert geometry[0][0] == 0
    assert geometry[0][1] == pytest.approx(100)
    assert geometry[1][0] == pytest.approx(100 * 10 / 120, rel=1e-3)
    assert len({g[2] for g in geometry}) == 3
    expect(page.locator(".legend .chip")).to_have_count(3)
    expect(page.locator(".wf-row .flag-error")).to_have_count(1)

    # Open the LLM run's detail: its hostile input must stay text.
    rows.nth(3).click()
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("summarise")
    expect(detail).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None
    assert detail.locator("script, img").count() == 0
    expect(detail).to_contain_text("total tokens")
    expect(detail).to_contain_text("150")
    assert f"run={runs[3]['id']}" in page.url

    # The shareable link selects the same run; the error shows its traceback.
    page.goto(open_server.url + f"/traces/{trace_id}?run={runs[4]['id']}")
    expect(page.locator("#detail .error-text")).to_contain_text("ValueError: card declined")
    page.goto(open_server.url + f"/traces/{trace_id}?run={runs[3]['id']}")
    expect(page.locator("#detail h2")).to_have_text("summarise")

    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]


def test_attachment_download_on_a_keyed_collector(server: ServerThread, keyed_page: object) -> None:
    """The key from ``#key=`` reaches the attachment download too, and "/" in a name works."""
    from playwright.sync_api import Page, expect

    page = keyed_page
    assert isinstance(page, Page)
    run = make_run("make report", service="reports")
    name = "reports/q1 summary"
    # Markup a browser would render, were the download ever shown inline.
    data = b"<html><body><script>window.__pwned = 1</script></body></html>\x00\xfe\xff"
    resp = httpx.post(
        server.url + "/runs/multipart",
        content=multipart_with_attachment(run, name, data, "text/html"),
        headers={**MP_HEADERS, "x-api-key": API_KEY},
    )
    assert resp.status_code == 200, resp.text

    page.goto(server.url + f"/traces/{run['id']}#key={API_KEY}")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    link = page.locator("#detail a.attachment")
    expect(link).to_have_text(name)
    expect(page.locator("#detail")).to_contain_text(f"text/html, {len(data)} bytes")
    # The key left the address bar (it lives in sessionStorage for this tab).
    assert API_KEY not in page.url

    api_requests: list[tuple[str, str | None]] = []
    page.on(
        "request",
        lambda req: (
            api_requests.append((req.url, req.headers.get("x-api-key")))
            if "/attachments/" in req.url
            else None
        ),
    )
    with page.expect_download() as info:
        link.click()
    download = info.value
    path = download.path()
    assert Path(path).read_bytes() == data
    # Saved under the attachment's name ("/" cannot be in a file name), never opened here.
    assert download.suggested_filename == "reports_q1 summary"
    assert api_requests == [
        (server.url + f"/api/runs/{run['id']}/attachments/reports%2Fq1%20summary", API_KEY)
    ]
    assert page.url == server.url + f"/traces/{run['id']}"
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#detail .flag-error")).to_be_hidden()
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]


def test_attachment_download_without_the_key_says_so(
    server: ServerThread, keyed_page: object
) -> None:
    """A failed download is reported on the page (as text), not silently dropped."""
    from playwright.sync_api import Page, expect

    page = keyed_page
    assert isinstance(page, Page)
    run = make_run("make report", service="reports")
    resp = httpx.post(
        server.url + "/runs/multipart",
        content=multipart_with_attachment(run, "a/b", b"bytes", "text/plain"),
        headers={**MP_HEADERS, "x-api-key": API_KEY},
    )
    assert resp.status_code == 200, resp.text
    page.goto(server.url + f"/traces/{run['id']}#key={API_KEY}")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    # The key goes away (e.g. rotated); the next click must say why nothing downloads.
    page.evaluate("sessionStorage.removeItem('tracestitch-key')")
    downloads: list[object] = []
    page.on("download", lambda d: downloads.append(d))
    page.locator("#detail a.attachment").click()
    problem = page.locator("#detail .flag-error")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("needs its API key")
    assert downloads == []
    # A wrong key is said to be rejected, not missing.
    page.goto(server.url + "/#key=not-the-key")
    expect(page.locator("#status-line")).to_have_text(
        "This collector rejected the API key: open the page with #key=ITS_KEY"
    )
    page.errors[:] = [e for e in page.errors if "401" not in e]  # type: ignore[attr-defined]
    assert page.errors == []  # type: ignore[attr-defined]


def test_feedback_shows_on_the_run(open_server: ServerThread, page: object) -> None:
    """Feedback sent with the SDK's ``POST /feedback`` is listed in the run's detail, as text."""
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    run = make_run("answer", service="bot", run_type="llm")
    assert httpx.post(open_server.url + "/runs", json=wire(run)).status_code == 200
    for doc in (
        {"key": "correctness", "score": 0.75, "comment": "<img src=x onerror=window.__pwned=1>"},
        {"key": "tone", "value": "polite", "feedback_source": {"type": "model"}},
    ):
        resp = httpx.post(open_server.url + "/feedback", json={"run_id": run["id"], **doc})
        assert resp.status_code == 200, resp.text

    page.goto(open_server.url + f"/traces/{run['id']}?run={run['id']}")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    items = page.locator("#detail .feedback-item")
    expect(items).to_have_count(2)
    expect(page.locator("#detail")).to_contain_text("Feedback (2)")
    expect(items.nth(0).locator(".feedback-key")).to_have_text("correctness")
    expect(items.nth(0).locator(".feedback-score")).to_have_text("0.75")
    expect(items.nth(0).locator(".feedback-comment")).to_have_text(
        "<img src=x onerror=window.__pwned=1>"
    )
    expect(items.nth(1).locator(".feedback-score")).to_have_text("polite")
    expect(items.nth(1)).to_contain_text("model")
    assert page.locator("#detail img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]


def _visible_names(page: Any) -> list[str]:
    return page.locator(".wf-row:visible .run-name").all_text_contents()


def test_reading_a_trace(open_server: ServerThread, page: object) -> None:
    """Collapse, keyboard, search, the name column, the error buttons and the time axis, on one
    realistic trace: the README's picture is taken from this page."""
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    runs = realistic_trace()
    resp = httpx.post(open_server.url + "/runs/batch", json={"post": [wire(r) for r in runs]})
    assert resp.status_code == 200
    page.goto(open_server.url + f"/traces/{runs[0]['id']}")
    expect(page.locator("body[data-complete=true]")).to_have_count(1)
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(9)
    detail = page.locator("#detail h2")

    # The root only says "HTTP 502": the buttons go to the first error and to its cause.
    page.locator("#deepest-error").click()
    expect(detail).to_have_text("GET /prices/{sku}")
    expect(page.locator("#detail .error-text")).to_contain_text("TimeoutError: legacy price book")
    page.locator("#first-error").click()
    expect(detail).to_have_text("POST /chat")

    # A long name is cut by the column but whole on hover; dragging the handle widens it.
    long_name = runs[2]["name"]
    assert rows.nth(2).locator(".run-name").get_attribute("title") == long_name
    label = rows.nth(2).locator(".row-label")
    before = label.bounding_box()["width"]
    handle = page.locator(".col-resizer").bounding_box()
    page.mouse.move(handle["x"] + 4, handle["y"] + 5)
    page.mouse.down()
    page.mouse.move(handle["x"] + 184, handle["y"] + 5, steps=4)
    page.mouse.up()
    assert label.bounding_box()["width"] == pytest.approx(before + 180, abs=6)

    # Collapse a subtree with its toggle; the keyboard moves, collapses and expands.
    rows.nth(1).locator(".toggle").click()
    assert _visible_names(page) == [
        "POST /chat",
        "retrieve context",
        "ChatOpenAI",
        "GET 127.0.0.1:35342/prices/kb-101",
        "GET /prices/{sku}",
    ]
    rows.nth(0).click()
    page.keyboard.press("ArrowDown")
    expect(detail).to_have_text("retrieve context")
    page.keyboard.press("ArrowRight")  # expands
    expect(rows.nth(2)).to_be_visible()
    page.keyboard.press("ArrowRight")  # to its first child
    expect(detail).to_have_text(long_name)
    page.keyboard.press("ArrowLeft")  # collapses it (it has children)
    expect(rows.nth(3)).to_be_hidden()
    page.keyboard.press("ArrowLeft")  # to its parent
    expect(detail).to_have_text("retrieve context")
    page.keyboard.press("ArrowLeft")  # collapses the parent
    expect(rows.nth(2)).to_be_hidden()
    # "/" searches: the match is selected and its collapsed ancestors open.
    page.keyboard.press("/")
    page.keyboard.type("vector")
    expect(detail).to_have_text("vector search")
    expect(page.locator(".wf-row.match")).to_have_count(1)
    expect(rows.nth(5)).to_be_visible()
    expect(page.locator("#search-count")).to_have_text("1 match")

    # The axis: one label per tick, none repeated, on a finished trace up to its end.
    ticks = page.locator(".tick").all_text_contents()
    assert len(ticks) == len(set(ticks)) >= 3
    assert ticks[-1] == "2.0 s"

    page.keyboard.press("Escape")
    rows.nth(6).click()  # the picture: the LLM call, as a conversation
    expect(detail).to_have_text("ChatOpenAI")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
    if os.environ.get("TRACESTITCH_UPDATE_SCREENSHOT"):  # `make screenshot`: the README's picture
        page.screenshot(path=str(DOCS_SCREENSHOT), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]


def test_a_running_trace_refreshes_until_it_ends(open_server: ServerThread, page: object) -> None:
    """An open root shows its elapsed time, the axis runs to now, and the page follows the
    trace until it ends."""
    from datetime import datetime, timedelta, timezone

    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    began = datetime.now(timezone.utc) - timedelta(seconds=5)
    at = lambda ms: (began + timedelta(milliseconds=ms)).isoformat()  # noqa: E731
    root = make_run("POST /ingest", service="worker", start_time=at(0), end_time=None)
    root["outputs"] = None
    quick = make_run("parse", parent=root, service="worker", start_time=at(1), end_time=at(1.2))
    for run in (root, quick):
        assert httpx.post(open_server.url + "/runs", json=wire(run)).status_code == 200

    page.goto(open_server.url + f"/traces/{root['id']}")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    expect(page.locator(".summary .badge")).to_have_text("pending")
    expect(page.locator(".trace-duration")).to_contain_text("running for")
    root_row = page.locator(".wf-row").nth(0)
    expect(root_row.locator(".flag-running")).to_have_text("pending")  # the API's word
    assert root_row.locator(".bar-label").text_content().startswith("running ")
    ticks = page.locator(".tick").all_text_contents()
    assert len(ticks) == len(set(ticks)) >= 3, ticks
    assert ticks[-1].endswith(" s") and float(ticks[-1].split()[0]) >= 4, ticks
    # The finished child sits at the start of a 5-second axis, not across the whole width.
    width = float(
        page.locator(".wf-row").nth(1).locator(".bar").evaluate("b => parseFloat(b.style.width)")
    )
    assert width < 5

    # The root ends: the page notices on its own.
    patch = {"end_time": datetime.now(timezone.utc).isoformat(), "outputs": {"rows": 3}}
    resp = httpx.patch(open_server.url + f"/runs/{root['id']}", json=patch)
    assert resp.status_code == 200
    expect(page.locator("body[data-complete=true]")).to_have_count(1, timeout=15_000)
    expect(page.locator(".summary .badge")).to_have_text("success")
    expect(page.locator(".trace-duration")).to_contain_text("duration")
    expect(root_row.locator(".flag-running")).to_have_count(0)
    assert page.errors == []  # type: ignore[attr-defined]


def _post(srv: ServerThread, runs: list[dict[str, Any]]) -> None:
    resp = httpx.post(srv.url + "/runs/batch", json={"post": [wire(r) for r in runs]})
    assert resp.status_code == 200, resp.text


def test_the_list_filters_sorts_and_explains(open_server: ServerThread, page: object) -> None:
    """Time range, tag, metadata, run type and route filters, the error column, sorting, an
    empty result that says why, and a service's colour the same on every page."""
    from datetime import datetime, timezone

    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    chat, shop = realistic_trace(), three_service_trace()
    now = datetime.now(timezone.utc).isoformat()
    recent = make_run("GET /health-report", service="gateway", start_time=now, end_time=now)
    _post(open_server, [*chat, *shop, recent])
    ids = {"chat": chat[0]["id"], "shop": shop[0]["id"], "recent": recent["id"]}

    def shown() -> set[str]:
        page.wait_for_function("document.body.dataset.loaded === 'true'")
        names = {v: k for k, v in ids.items()}
        return {
            names[t]
            for t in page.locator("#traces tbody tr").evaluate_all(
                "rs => rs.map(r => r.dataset.traceId)"
            )
        }

    page.goto(open_server.url + "/")
    rows = page.locator("#traces tbody tr")
    expect(rows).to_have_count(3)
    chat_row = page.locator(f"tr[data-trace-id='{ids['chat']}']")
    # The error column names the cause (the deepest error), not the root's "HTTP 502".
    expect(chat_row.locator(".error-message")).to_have_text(
        "TimeoutError: legacy price book did not answer"
    )
    expect(page.locator(f"tr[data-trace-id='{ids['shop']}'] .error-message")).to_have_text(
        "ValueError: card declined"
    )

    # Sorting by duration: longest first, then shortest first.
    page.locator("th[data-sort=duration] button").click()
    expect(page.locator("th[data-sort=duration]")).to_have_attribute("aria-sort", "descending")
    expect(rows.first).to_have_attribute("data-trace-id", ids["chat"])
    page.locator("th[data-sort=duration] button").click()
    expect(rows.first).to_have_attribute("data-trace-id", ids["recent"])
    assert "sort=duration&order=asc" in page.url

    form = page.locator("#filters")
    for field, value, expected in (
        ("tag", "beta", {"chat"}),
        ("metadata", "user=u-1842", {"chat"}),
        ("route", "/chat", {"chat"}),
    ):
        form.locator(f"[name={field}]").fill(value)
        expect(rows).to_have_count(len(expected))
        assert shown() == expected, field
        form.locator(f"[name={field}]").fill("")
    form.locator("[name=run_type]").select_option("llm")
    expect(rows).to_have_count(2)
    assert shown() == {"chat", "shop"}
    form.locator("[name=run_type]").select_option("")
    form.locator("[name=range]").select_option("15m")
    expect(rows).to_have_count(1)
    assert shown() == {"recent"}
    assert "range=15m" in page.url
    form.locator("[name=tag]").fill("no-such-tag")
    expect(rows).to_have_count(0)
    expect(page.locator("#status-line")).to_have_text("No traces match these filters.")

    # A service keeps its colour from the list to the trace page.
    page.goto(open_server.url + "/")
    expect(rows).to_have_count(3)
    gateway_dot = "e => getComputedStyle(e).backgroundColor"
    in_list = chat_row.locator(".chip", has_text="gateway").locator(".dot").evaluate(gateway_dot)
    in_other_row = page.locator(f"tr[data-trace-id='{ids['recent']}'] .chip .dot").evaluate(
        gateway_dot
    )
    chat_row.locator("a").click()
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    on_trace = (
        page.locator(".legend .chip", has_text="gateway").locator(".dot").evaluate(gateway_dot)
    )
    assert in_list == in_other_row == on_trace
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]


def test_runs_raw_copy_download_and_conversation(open_server: ServerThread, page: object) -> None:
    """A run's raw JSON, copy and download of a run and of the trace, an LLM run as a
    conversation with its model, tokens and cost in the tree, and its feedback on its row."""
    import json

    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    runs = realistic_trace()
    _post(open_server, runs)
    llm = runs[6]
    feedback = {"run_id": llm["id"], "key": "helpfulness", "score": 1}
    assert httpx.post(open_server.url + "/feedback", json=feedback).status_code == 200
    page.goto(open_server.url + f"/traces/{runs[0]['id']}?run={llm['id']}")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    row = page.locator(f".wf-row[data-run-id='{llm['id']}']")
    expect(row.locator(".run-meta")).to_have_text("gpt-4o-mini · 450 tok · $0.0001")
    expect(row.locator(".flag-feedback")).to_have_text("feedback 1")

    turns = page.locator("#detail .conversation .turn")
    expect(turns).to_have_count(3)
    assert turns.locator(".turn-role").all_text_contents() == ["system", "user", "assistant"]
    expect(turns.nth(2).locator(".turn-text")).to_have_text(
        "Yes: returns are accepted within 30 days of delivery."
    )
    # The other shapes: Anthropic (system beside the messages, content blocks, tool use) and
    # LangChain (serialised messages in a batch, generations).
    shapes = page.evaluate(
        """() => [
          LLM.conversation({inputs: {system: "Be brief.", messages: [{role: "user",
              content: [{type: "text", text: "Weather?"}]}]},
            outputs: {role: "assistant", type: "message", content: [{type: "text",
              text: "Checking."}, {type: "tool_use", name: "weather", input: {city: "Oslo"}}]}}),
          LLM.conversation({inputs: {messages: [[{lc: 1, type: "constructor",
              id: ["langchain", "schema", "messages", "HumanMessage"],
              kwargs: {content: "Hi", type: "human"}}]]},
            outputs: {generations: [[{text: "Hello!", message: {lc: 1, type: "constructor",
              id: ["langchain", "schema", "messages", "AIMessage"],
              kwargs: {content: "Hello!", type: "ai"}}}]]}}),
        ].map(c => c.map(t => [t.role, t.text, t.calls.map(x => x.name).join()]))"""
    )
    assert shapes == [
        [
            ["system", "Be brief.", ""],
            ["user", "Weather?", ""],
            ["assistant", "Checking.", "weather"],
        ],
        [["user", "Hi", ""], ["assistant", "Hello!", ""]],
    ]

    detail = page.locator("#detail")
    raw = detail.locator(".raw-json")
    expect(raw).to_be_hidden()
    detail.locator(".raw-toggle").click()
    expect(raw).to_contain_text('"ls_model_name": "gpt-4o-mini"')
    assert json.loads(raw.text_content())["id"] == llm["id"]

    detail.locator(".copy-run").click()
    expect(detail.locator(".action-note")).to_have_text("copied")
    assert json.loads(page.evaluate("navigator.clipboard.readText()"))["id"] == llm["id"]
    with page.expect_download() as info:
        detail.locator(".download-run").click()
    assert info.value.suggested_filename == f"run-{llm['id']}.json"
    assert json.loads(Path(info.value.path()).read_text())["name"] == "ChatOpenAI"

    with page.expect_download() as info:
        page.locator("#download-trace").click()
    exported = json.loads(Path(info.value.path()).read_text())
    assert exported["format"] == "tracestitch.trace.v1"
    assert [r["id"] for r in exported["runs"]] == [r["id"] for r in runs]
    page.locator("#copy-trace").click()
    expect(page.locator("#trace-action-note")).to_have_text("copied")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == exported
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]


def test_services_table_and_map(open_server: ServerThread, page: object) -> None:
    """Per service and route figures, and the map of who calls whom, on the services page."""
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    _post(open_server, realistic_trace())
    page.goto(open_server.url + "/services?range=all")
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    rows = page.locator("#services tbody tr")
    expect(rows).to_have_count(3)
    table = rows.evaluate_all(
        "rs => rs.map(r => [r.dataset.service, r.dataset.route,"
        " r.querySelector('.requests').textContent, r.querySelector('.error-rate').textContent,"
        " r.querySelector('.p50').textContent])"
    )
    # p50 as the page writes it; "all" is read from the rollup: within 1% of the exact value.
    assert [row[:4] for row in table] == [
        ["gateway", "POST /chat", "1", "100%"],
        ["pricing", "GET /prices/{sku}", "1", "100%"],
        ["search", "GET /search", "1", "0%"],
    ]
    shown = [float(p50.split()[0]) * (1000 if p50.endswith(" s") else 1) for *_, p50 in table]
    assert shown == [
        pytest.approx(exact, rel=RELATIVE_ERROR + 0.005) for exact in (2400, 460, 230)
    ]  # + the page's rounding to three figures
    nodes = page.locator("#service-map g.node")
    expect(nodes).to_have_count(3)
    edges = page.locator("#service-map g.edge").evaluate_all(
        "es => es.map(e => [e.dataset.caller, e.dataset.callee, e.textContent])"
    )
    assert edges == [
        ["gateway", "pricing", "1 call, 1 failed"],
        ["gateway", "search", "1 call"],
    ]
    # The caller is drawn left of its callees.
    xs = {
        n: page.locator(f"#service-map g.node[data-service={n}]").bounding_box()["x"]
        for n in ("gateway", "pricing", "search")
    }
    assert xs["gateway"] < xs["pricing"] == xs["search"]
    # The range is in the URL; nothing started in the last 15 minutes.
    page.locator("[name=range]").select_option("15m")
    expect(rows).to_have_count(0)
    expect(page.locator("#status-line")).to_have_text(
        "No requests to a named service in this range."
    )
    assert "range=15m" in page.url
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("[name=range]").select_option("all")
    expect(rows).to_have_count(3)
    page.screenshot(path=str(ARTIFACTS / "services.png"), full_page=True)
    if os.environ.get("TRACESTITCH_UPDATE_SCREENSHOT"):
        page.screenshot(path=str(DOCS_SCREENSHOT.with_name("services.png")), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.outside == []  # type: ignore[attr-defined]

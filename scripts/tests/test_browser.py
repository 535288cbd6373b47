"""The API docs and the admin, driven in a real Chromium against the whole system.

Debian's `chromium` (apt) is driven by Playwright; the browser is never downloaded. Without
/usr/bin/chromium these tests skip, unless REQUIRE_BROWSER=1 (set by .ci/run) makes that a
failure. Screenshots land in test-artifacts/browser/.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from scripts.stack import Api, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# headless=True adds --headless. The network flags keep Chromium from spending its time on
# connections this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module", autouse=True)
def chromium() -> Path:
    """Skip without Debian's chromium, or fail where CI promised to install it."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing; install it with `apt-get install chromium`"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack"), web_workers=1, beat=False) as running:
        yield running


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[Browser]:
    # Screenshots from an earlier run, failures above all, would only mislead.
    for old_screenshot in ARTIFACTS.glob("*.png"):
        old_screenshot.unlink()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    opened.set_default_navigation_timeout(WAIT_MS)
    yield opened
    context.close()


def screenshot(target: Page | Locator, name: str) -> Path:
    """Save the whole page, or one element of it, into the test artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if isinstance(target, Page):
        target.screenshot(path=path, full_page=True)
    else:
        target.screenshot(path=path)
    print(f"screenshot: {path}")
    return path


@contextmanager
def screenshot_on_failure(page: Page, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        screenshot(page, f"{name}-failure")
        raise


def swagger_execute(page: Page, operation_id: str, *, body: dict | None = None) -> dict:
    """Expand an operation, "Try it out", fill the body, Execute; return the JSON response.

    Swagger UI marks each operation `#operations-<tag>-<operationId>`.
    """
    operation = page.locator(f"#operations-{operation_id}")
    operation.locator(".opblock-summary").click()
    operation.locator(".btn.try-out__btn").click()
    if body is not None:
        operation.locator("textarea.body-param__text").fill(json.dumps(body))
    return execute(operation)


def execute(operation: Locator) -> dict:
    operation.locator(".btn.execute").click()
    # The live response table appears once the request has finished.
    response = operation.locator(".live-responses-table .response")
    expect(response).to_be_visible()
    status = response.locator(".response-col_status").inner_text().strip()
    body = response.locator(".highlight-code code").inner_text()
    assert status in {"200", "201"}, f"{status} {body}"
    return json.loads(body)


def test_a_user_logs_in_authorizes_and_submits_a_job_in_swagger_ui(stack, page):
    email, password = stack.create_verified_user()
    page.goto(f"{stack.base_url}/api/schema/swagger-ui/")

    with screenshot_on_failure(page, "swagger"):
        # Served from local files (drf-spectacular-sidecar): a blank page would have none.
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Job Processing")
        tokens = swagger_execute(
            page, "accounts-login_create", body={"email": email, "password": password}
        )

        page.locator(".auth-wrapper .btn.authorize").click()
        page.locator(".dialog-ux #auth-bearer-value").fill(tokens["access"])
        page.locator(".dialog-ux .btn.modal-btn.authorize").click()
        page.locator(".dialog-ux .btn-done").click()
        expect(page.locator(".auth-wrapper .btn.authorize.locked")).to_be_visible()

        created = swagger_execute(
            page,
            "jobs-jobs_create",
            body={"name": "from swagger", "job_type": "echo", "parameters": {"message": "hi"}},
        )
        retrieve = page.locator("#operations-jobs-jobs_retrieve")
        retrieve.locator(".opblock-summary").click()
        retrieve.locator(".btn.try-out__btn").click()
        retrieve.locator('tr[data-param-name="id"] input').fill(created["id"])
        job = execute(retrieve)

    screenshot(page, "swagger-job-read-back")
    screenshot(retrieve, "swagger-get-job")  # The full page is too tall to read at a glance.
    assert job["id"] == created["id"]
    assert job["name"] == "from swagger"
    assert job["job_type"] == "echo"


def test_staff_cancel_a_pending_job_from_the_admin_job_list(stack, page):
    owner_token = stack.login(*stack.create_verified_user())
    # Scheduled an hour ahead, the job stays pending until the admin cancels it.
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, job = Api(stack.base_url, owner_token).request(
        "POST", "/api/jobs/", {"name": "cancel me", "scheduled_time": in_an_hour}
    )
    assert status == 201, job
    staff_email, staff_password = "staff@example.com", "staff-password-for-e2e"
    stack.manage(
        "shell",
        input_text=(
            "from users.models import CustomUser\n"
            f"CustomUser.objects.create_superuser({staff_email!r}, {staff_password!r})\n"
        ),
    )

    page.goto(f"{stack.base_url}/admin/")
    with screenshot_on_failure(page, "admin"):
        page.locator("#id_username").fill(staff_email)
        page.locator("#id_password").fill(staff_password)
        page.locator('#login-form [type="submit"]').click()
        page.locator("#jobs-job a").click()  # The Jobs model in the admin index.
        row = page.locator("#result_list tbody tr").filter(
            has=page.locator(f'input.action-select[value="{job["id"]}"]')
        )
        expect(row).to_contain_text("cancel me")
        expect(row.locator(".field-status")).to_have_text("Pending")
        screenshot(page, "admin-job-list")

        row.locator("input.action-select").check()
        page.locator('select[name="action"]').select_option(
            label="Cancel selected pending or running jobs"
        )
        page.locator('#changelist-form button[name="index"]').click()
        expect(page.locator(".messagelist .success")).to_have_text("Cancelled 1 job(s).")
        expect(row.locator(".field-status")).to_have_text("Cancelled")

    screenshot(page, "admin-job-cancelled")
    # A new connection: gunicorn has closed the idle keep-alive one by now.
    _, reread = Api(stack.base_url, owner_token).request("GET", f"/api/jobs/{job['id']}/")
    assert reread["status"] == "cancelled"

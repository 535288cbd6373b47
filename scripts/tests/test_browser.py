"""The API docs and the admin, driven in a real Chromium against the whole system.

Debian's `chromium` (apt) is driven by Playwright; the browser is never downloaded. Without
/usr/bin/chromium these tests skip, unless REQUIRE_BROWSER=1 (set by .ci/run) makes that a
failure. Screenshots land in test-artifacts/browser/.
"""

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from job_system.tests.test_api_docs import SECTIONS
from jobs.tests.live import wait_for
from scripts.stack import Api, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# A name for the test server other than loopback's, as a deployment has one: Swagger UI, for
# one, behaves differently on localhost. Chromium resolves it to 127.0.0.1 itself.
DOCS_HOST = "docs.test"
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
    f"--host-resolver-rules=MAP {DOCS_HOST} 127.0.0.1",
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
    workdir = tmp_path_factory.mktemp("stack")
    env = {
        "ALLOWED_HOSTS": f"127.0.0.1,{DOCS_HOST}",
        # Emails as files, where a test reads the codes a person would read in the console.
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(workdir / "emails"),
    }
    with Stack(workdir, web_workers=1, beat=False, env=env) as running:
        yield running


@pytest.fixture
def docs_url(stack) -> str:
    return f"http://{DOCS_HOST}:{stack.port}"


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
        try:
            screenshot(page, f"{name}-failure")
        except PlaywrightError as error:  # The failure matters more than its picture.
            print(f"no screenshot: {error}")
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


@pytest.fixture(scope="module")
def staff(stack) -> tuple[str, str]:
    """A superuser's email and password, for the admin."""
    email, password = "staff@example.com", "staff-password-for-e2e"
    stack.manage(
        "shell",
        input_text=(
            "from users.models import CustomUser\n"
            f"CustomUser.objects.create_superuser({email!r}, {password!r})\n"
        ),
    )
    return email, password


def admin_login(page: Page, stack: Stack, staff: tuple[str, str]) -> None:
    page.goto(f"{stack.base_url}/admin/")
    page.locator("#id_username").fill(staff[0])
    page.locator("#id_password").fill(staff[1])
    page.locator('#login-form [type="submit"]').click()


def test_staff_cancel_a_pending_job_from_the_admin_job_list(stack, staff, page):
    owner_token = stack.login(*stack.create_verified_user())
    # Scheduled an hour ahead, the job stays pending until the admin cancels it.
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, job = Api(stack.base_url, owner_token).request(
        "POST", "/api/jobs/", {"name": "cancel me", "scheduled_time": in_an_hour}
    )
    assert status == 201, job

    with screenshot_on_failure(page, "admin"):
        admin_login(page, stack, staff)
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


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/api/schema/swagger-ui/", ".swagger-ui .info .title"),
        ("/api/schema/redoc/", ".api-content h1"),
    ],
    ids=["swagger-ui", "redoc"],
)
def test_the_docs_make_no_request_to_another_host(docs_url, page, path, rendered):
    outside = []

    def only_the_test_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(docs_url).netloc:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()  # Nothing leaves the machine, and nothing waits on a timeout.

    page.context.route("**/*", only_the_test_server)
    page.goto(f"{docs_url}{path}")

    with screenshot_on_failure(page, f"docs-offline{path.replace('/', '-')}"):
        expect(page.locator(rendered)).to_contain_text("Job Processing")
        page.wait_for_load_state("networkidle")
    assert outside == []


# A code on a line of its own: 6 digits, or a long code in dashed groups of four.
EMAILED_CODE = re.compile(r"^(\d{6}|[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})$", re.M)


def emailed_code(stack: Stack, subject: str, after: set[Path]) -> str:
    """Return the code of the newest email with this subject, among those sent since `after`."""
    mailbox = stack.workdir / "emails"

    def find() -> str | None:
        for message in sorted(set(mailbox.glob("*.log")) - after, reverse=True):
            text = message.read_text()
            if f"Subject: {subject}" in text and (code := EMAILED_CODE.search(text)):
                return code.group(1)
        return None

    return wait_for(find, timeout=20, message=f"no email {subject!r} came")


def emails_so_far(stack: Stack) -> set[Path]:
    return set((stack.workdir / "emails").glob("*.log"))


class SwaggerUI:
    """A person in Swagger UI: open an operation, "Try it out", Execute, read the answer.

    Bodies are the example Swagger UI pre-fills; only the values that the server hands out (a
    code, a token, an id) are filled in, as a person copies them from an earlier answer.
    """

    def __init__(self, page: Page) -> None:
        self.page = page
        self.executed: list[str] = []

    def operation(self, operation_id: str) -> Locator:
        """Return an operation by `<tag>-<operationId>`, opened and ready to execute."""
        operation = self.page.locator(f"#operations-{operation_id}")
        if "is-open" not in (operation.get_attribute("class") or ""):
            operation.locator(".opblock-summary").click()
        try_out = operation.locator(".btn.try-out__btn")
        if "cancel" not in (try_out.get_attribute("class") or ""):
            try_out.click()
        return operation

    def execute(
        self,
        operation_id: str,
        *,
        example: str | None = None,
        fill: dict | None = None,
        path: dict | None = None,
    ) -> dict | None:
        operation = self.operation(operation_id)
        if example is not None:
            operation.locator("select.examples-select-element").select_option(label=example)
        if fill:
            body_field = operation.locator("textarea.body-param__text")
            body = json.loads(body_field.input_value())
            assert set(fill) <= set(body), f"{operation_id}'s example has no {set(fill)}"
            body_field.fill(json.dumps(body | fill))
        for name, value in (path or {}).items():
            operation.locator(f'tr[data-param-name="{name}"] input').fill(value)
        with self.page.expect_response(is_an_api_call) as answer:
            operation.locator(".btn.execute").click()
        response = answer.value
        assert 200 <= response.status < 300, f"{operation_id}: {response.status} {response.text()}"
        # The answer is on the page too, as a person reads it.
        expect(
            operation.locator(".live-responses-table .response .response-col_status")
        ).to_contain_text(str(response.status))
        self.executed.append(operation_id)
        # Closed again, as a person tidies up: dozens of open operations slow the page down.
        operation.locator(".opblock-summary").click()
        return response.json() if response.text() else None

    def authorize(self, access_token: str) -> None:
        self.page.locator(".auth-wrapper .btn.authorize").click()
        dialog = self.page.locator(".dialog-ux")
        expect(dialog.locator(".modal-ux-content")).to_be_visible()
        if (logout := dialog.get_by_role("button", name="Remove authorization")).is_visible():
            logout.click()  # Forget the token of an earlier session.
        dialog.locator("#auth-bearer-value").fill(access_token)
        dialog.locator(".btn.modal-btn.authorize").click()
        dialog.locator(".btn-done").click()

    def operation_ids(self) -> list[str]:
        """Every operation on the page, in the order shown, but the deprecated ones.

        Those are older addresses of the same views, and the old verify-email route would need
        a code that the flow has spent on verify-otp.
        """
        blocks = self.page.locator(".opblock:not(.opblock-deprecated)").all()
        return [block.get_attribute("id").removeprefix("operations-") for block in blocks]


def is_an_api_call(response) -> bool:
    # Swagger UI reloads the schema after "Authorize"; that is not the operation's answer.
    path = urlsplit(response.url).path
    return path.startswith("/api/") and not path.startswith("/api/schema/")


# Some 30 operations, each clicked through as a person would: about a minute on 2 idle cores.
@pytest.mark.timeout(300)
def test_every_example_in_swagger_ui_succeeds_as_it_stands(stack, docs_url, page):
    page.goto(f"{docs_url}/api/schema/swagger-ui/")
    ui = SwaggerUI(page)

    with screenshot_on_failure(page, "swagger-examples"):
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Job Processing")
        # The sections, in the order a newcomer uses them.
        tags = page.locator("h3.opblock-tag")
        sections = tags.evaluate_all("tags => tags.map(tag => tag.dataset.tag)")
        assert sections == SECTIONS
        seen = emails_so_far(stack)
        ui.execute("accounts-register_create")
        code = emailed_code(stack, "Your confirmation code", seen)
        ui.execute("accounts-verify_otp_create", fill={"otp": code})
        ui.execute("accounts-resend_otp_create")
        tokens = ui.execute("accounts-login_create")
        tokens = ui.execute("accounts-token_refresh_create", fill={"refresh": tokens["refresh"]})
        ui.authorize(tokens["access"])
        ui.execute("accounts-logout_create", fill={"refresh": tokens["refresh"]})
        ui.execute("accounts-me_retrieve")  # An access token lasts until it expires.
        # A password change signs every session out; the tokens it answers with carry on.
        tokens = ui.execute("accounts-password_change_create")
        ui.authorize(tokens["access"])
        seen = emails_so_far(stack)
        ui.execute("accounts-password_reset_create")
        code = emailed_code(stack, "Your password reset code", seen)
        # Back to the sample password, which the login example has.
        ui.execute("accounts-password_reset_confirm_create", fill={"otp": code})
        ui.authorize(ui.execute("accounts-login_create")["access"])

        echo = ui.execute("jobs-jobs_create")
        sleep = ui.execute("jobs-jobs_create", example="A sleep job to try cancel and retry on")
        # Read the job again, as a person would, until it has completed.
        wait_for(
            lambda: (
                ui.execute("jobs-jobs_retrieve", path={"id": echo["id"]})["status"] == "completed"
            ),
            timeout=20,
            interval=0.5,
            message="the echo job did not complete",
        )
        result = ui.execute("jobs-jobs_result_retrieve", path={"id": echo["id"]})
        ui.execute("jobs-jobs_cancel_create", path={"id": sleep["id"]})
        ui.execute("jobs-jobs_retry_create", path={"id": sleep["id"]})
        ui.execute("jobs-jobs_destroy", path={"id": sleep["id"]})
        ui.execute("job-results-job_results_retrieve", path={"id": str(result["id"])})
        hook = ui.execute("webhooks-webhooks_create")
        for operation_id in (
            "webhooks-webhooks_retrieve",
            "webhooks-webhooks_partial_update",
            "webhooks-webhooks_rotate_secret_create",
            "webhooks-webhooks_deliveries_list",
            "webhooks-webhooks_redeliver_create",
            "webhooks-webhooks_destroy",
        ):
            ui.execute(operation_id, path={"id": hook["id"]})
        schedule = ui.execute("schedules-schedules_create")
        for operation_id in (
            "schedules-schedules_retrieve",
            "schedules-schedules_partial_update",
            "schedules-schedules_trigger_create",
            "schedules-schedules_pause_create",
            "schedules-schedules_resume_create",
            "schedules-schedules_destroy",
        ):
            ui.execute(operation_id, path={"id": schedule["id"]})
        # The events process serves the stream; the web server answers it with 421, which
        # the page shows as documented (events/tests/test_web_route.py covers it).
        ui.executed.append("events-events_stream")
        # The rest take nothing from an earlier answer.
        for operation_id in ui.operation_ids():
            if operation_id not in ui.executed:
                ui.execute(operation_id)

    # The whole page is too tall to read at a glance.
    screenshot(ui.operation("jobs-jobs_create"), "swagger-job-example-executed")


def test_the_admin_job_list_fits_1400_pixels_and_finds_a_job_by_its_short_id(stack, staff, browser):
    api = Api(stack.base_url, stack.login(*stack.create_verified_user()))
    for name in ("count the words of a long report", "say hello"):
        status, job = api.request("POST", "/api/jobs/", {"name": name})
        assert status == 201, job
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()

    with screenshot_on_failure(page, "admin-1400"):
        admin_login(page, stack, staff)
        page.goto(f"{stack.base_url}/admin/jobs/job/")
        # Every column shows: the table is no wider than its box, which would scroll otherwise.
        results = page.locator("#changelist .results")
        expect(page.locator("#result_list th.column-created_at")).to_be_visible()
        assert results.evaluate("box => box.scrollWidth <= box.clientWidth")
        short_id = page.locator(f'#result_list tr:has(input[value="{job["id"]}"]) .field-short_id')
        expect(short_id).to_have_text(job["id"][:8])
        screenshot(page, "admin-job-list-1400")

        page.locator("#searchbar").fill(job["id"][:8])
        page.locator("#searchbar").press("Enter")
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        expect(page.locator("#result_list tbody tr .field-name")).to_have_text("say hello")
    context.close()

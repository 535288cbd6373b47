"""Development email, logged whole by the process that sends it (job_system.mail)."""

from django.core import mail

from job_system.tests.test_logging import root_output

BODY = "Your code is 930852.\nIt expires in 10 minutes."


def send() -> int:
    connection = mail.get_connection("job_system.mail.ConsoleEmailBackend")
    return mail.send_mail(
        "Your code", BODY, "from@example.com", ["ada@example.com"], connection=connection
    )


def test_an_email_is_one_info_block_with_its_headers_and_body():
    with root_output("plain") as output:
        sent = send()

    first, *rest = output.lines
    assert sent == 1
    assert first.endswith(" INFO job_system.mail email to ada@example.com")
    assert "Subject: Your code" in rest
    assert rest[-2:] == BODY.splitlines()


def test_an_email_is_one_json_object():
    with root_output("json") as output:
        send()

    [entry] = output.entries
    assert entry["level"] == "INFO"
    assert entry["message"].endswith(BODY)

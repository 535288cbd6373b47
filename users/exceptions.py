"""Errors about accounts that any app's services may raise."""


class AccountDeleted(Exception):
    """The account was deleted while a request of its own was running.

    Authentication read the account (or a copy kept for a few seconds) at the start, so it can
    be gone by the time the request writes; the API answers with the 401 authentication would
    give now (job_system.exceptions).
    """

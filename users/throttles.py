"""Per-client-IP caps on the endpoints that email codes, counted together in the shared cache.

They sit beside each endpoint's own scope (ScopedRateThrottle). The per-address caps live in
the database (users.otp); these stop one client from spraying codes across many addresses.
"""

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView


class ClientIpRateThrottle(SimpleRateThrottle):
    """Count requests by client IP, signed in or not, under the subclass's scope."""

    def get_cache_key(self, request: Request, view: APIView) -> str:
        # get_ident honours NUM_PROXIES, so behind a proxy this is the client, not the proxy.
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class CodeEmailsPerHourThrottle(ClientIpRateThrottle):
    scope = "otp_ip_hour"


class CodeEmailsPerDayThrottle(ClientIpRateThrottle):
    scope = "otp_ip_day"


CODE_EMAIL_THROTTLES = [CodeEmailsPerHourThrottle, CodeEmailsPerDayThrottle]

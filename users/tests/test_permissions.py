import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from users.permissions import IsVerified

pytestmark = pytest.mark.django_db


class VerifiedOnlyView(APIView):
    permission_classes = [IsVerified]

    def get(self, request):
        return Response({"ok": True})


def get_as(user):
    request = APIRequestFactory().get("/verified-only/")
    if user is not None:
        force_authenticate(request, user=user)
    return VerifiedOnlyView.as_view()(request)


def test_is_verified_refuses_an_unverified_account_with_email_not_verified(unverified_user):
    response = get_as(unverified_user)

    assert response.status_code == 403
    assert response.data["detail"].code == "email_not_verified"


def test_is_verified_lets_a_verified_account_in(verified_user):
    assert get_as(verified_user).status_code == 200


def test_is_verified_asks_anonymous_callers_to_authenticate():
    assert get_as(None).status_code == 401

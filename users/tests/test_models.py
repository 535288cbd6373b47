import pytest
from django.db import IntegrityError

from users.models import CustomUser

pytestmark = pytest.mark.django_db


def test_email_is_stored_lowercase_and_unique_regardless_of_case():
    CustomUser.objects.create_user("Ada@Example.com", "a-long-enough-password")
    assert CustomUser.objects.filter(email="ada@example.com").exists()
    with pytest.raises(IntegrityError):
        CustomUser.objects.create_user("ADA@example.com", "a-long-enough-password")


def test_create_superuser_is_staff_and_verified():
    admin = CustomUser.objects.create_superuser("root@example.com", "a-long-enough-password")
    assert admin.is_staff
    assert admin.is_superuser
    assert admin.is_verified

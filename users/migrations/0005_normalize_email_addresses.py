"""Store every address in its normalised form (users.addresses).

An account whose address normalisation refuses (invisible characters, a domain literal), or
that is a variant of another account's address (`alice@\uff45xample.com` beside alice@example.com),
was made by the hole this closes: it is deactivated, never deleted, and staff can look at it.
"""

from django.db import migrations

from users.addresses import InvalidAddress, normalize_address


def normalize_addresses(apps, schema_editor):
    User = apps.get_model("users", "CustomUser")
    for user_id, email in User.objects.order_by("pk").values_list("pk", "email").iterator():
        try:
            normalized = normalize_address(email)
        except InvalidAddress:
            User.objects.filter(pk=user_id).update(is_active=False)
            continue
        if normalized == email:
            continue
        if User.objects.filter(email__iexact=normalized).exclude(pk=user_id).exists():
            User.objects.filter(pk=user_id).update(is_active=False)
        else:
            User.objects.filter(pk=user_id).update(email=normalized)


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0004_signup_password_and_unlock_codes"),
    ]

    operations = [
        migrations.RunPython(normalize_addresses, migrations.RunPython.noop, elidable=True),
    ]

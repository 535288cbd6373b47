from webhooks.signing import new_secret, sign, signature_header, verify

# Standard Webhooks' own test vector (its reference libraries test with it).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_specification_s_vector():
    signed = sign(SPEC_SECRET, webhook_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)

    assert signed == SPEC_SIGNATURE


def test_a_receiver_verifies_the_signature_and_refuses_a_changed_body():
    header = signature_header(
        [SPEC_SECRET], webhook_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY
    )

    assert verify(
        SPEC_SECRET, webhook_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY, header=header
    )
    assert not verify(
        SPEC_SECRET, webhook_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=b"{}", header=header
    )
    assert not verify(
        SPEC_SECRET, webhook_id=SPEC_ID, timestamp=SPEC_TIMESTAMP + 1, body=SPEC_BODY, header=header
    )


def test_after_a_rotation_both_secrets_verify_the_same_delivery():
    old, new = new_secret(), new_secret()
    header = signature_header([new, old], webhook_id=SPEC_ID, timestamp=1, body=b"{}")

    assert len(header.split(" ")) == 2
    assert verify(old, webhook_id=SPEC_ID, timestamp=1, body=b"{}", header=header)
    assert verify(new, webhook_id=SPEC_ID, timestamp=1, body=b"{}", header=header)
    assert not verify(new_secret(), webhook_id=SPEC_ID, timestamp=1, body=b"{}", header=header)


def test_secrets_are_random_and_prefixed():
    secrets = {new_secret() for _ in range(100)}

    assert len(secrets) == 100
    assert all(secret.startswith("whsec_") and len(secret) == 50 for secret in secrets)

"""A digest of a text, with a choice of hash algorithms."""

import hashlib
from typing import Any

from rest_framework import serializers

from jobs.handlers import register
from jobs.handlers.base import JobHandler, Progress

ALGORITHMS = (
    "md5",
    "sha1",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sha3_256",
    "sha3_512",
    "blake2b",
    "blake2s",
)


class ChecksumParameters(serializers.Serializer):
    text = serializers.CharField(
        allow_blank=True,
        max_length=1_000_000,
        # Every byte is hashed, so leading and trailing whitespace must survive.
        trim_whitespace=False,
        help_text="The text to hash; it is encoded as UTF-8 first.",
    )
    algorithm = serializers.ChoiceField(
        choices=ALGORITHMS,
        required=False,
        default="sha256",
        help_text="The hash algorithm.",
    )


@register
class Checksum(JobHandler):
    name = "checksum"
    description = "Compute the hex digest of a text's UTF-8 bytes with the chosen hash algorithm."
    Parameters = ChecksumParameters
    quick = True

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        data = params["text"].encode("utf-8")
        # The digest is a checksum the user asked for, not a security control; saying so
        # lets FIPS-mode builds compute md5 and sha1.
        digest = hashlib.new(params["algorithm"], data, usedforsecurity=False)
        return {
            "algorithm": params["algorithm"],
            "hexdigest": digest.hexdigest(),
            "bytes": len(data),
        }

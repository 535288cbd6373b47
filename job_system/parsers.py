"""The API's JSON parser: DRF's, refusing bodies nested too deeply before decoding them."""

from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

from job_system.json_depth import text_nested_too_deeply


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, with nesting deeper than MAX_JSON_DEPTH refused as a parse error."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        encoding = parsers.get_encoding(parser_context or {})
        try:
            text = stream.read().decode(encoding)
            if text_nested_too_deeply(text):
                raise ParseError(
                    f"JSON parse error - nested deeper than {settings.MAX_JSON_DEPTH} levels."
                )
            parse_constant = json.strict_constant if self.strict else None
            return json.loads(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc

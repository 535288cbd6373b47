import re

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ErrorDetail, NotFound, ValidationError
from rest_framework.pagination import CursorPagination

from jobs.filters import single_query_value

# More digits than any page size: the value is capped, not parsed.
PAGE_SIZE_DIGITS = 9
# Base64, as DRF writes cursors. DRF's decoder would skip other characters.
CURSOR = re.compile(r"[A-Za-z0-9+/=]*")


def query_parameter_error(name: str, message: str, code: str) -> ValidationError:
    """Refuse a query parameter with 400, keyed by its name, as serializers key fields."""
    return ValidationError({name: [ErrorDetail(message, code=code)]})


class NewestFirstPagination(CursorPagination):
    """Cursor pages: as fast on page 1,000 as on page 1, and stable while jobs are added.

    A `page_size` that is not a whole number from 1 up is refused with 400 (DRF would ignore
    it); one over `max_page_size` gives `max_page_size`. A cursor this list did not give out is
    refused with 400 too, keyed by `cursor` (DRF answers 404, as if the list were missing).
    """

    invalid_cursor_message = "Invalid cursor: copy it from a page's `next` or `previous`."

    ordering = "-created_at"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        self.model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request) -> int:
        value = single_query_value(request.query_params, self.page_size_query_param)
        if value is None:
            return self.page_size
        if not (value.isascii() and value.isdigit()):
            raise self.page_size_error("A valid integer is required.", "invalid")
        digits = value.lstrip("0")
        if not digits:
            raise self.page_size_error(
                "Ensure this value is greater than or equal to 1.", "min_value"
            )
        if len(digits) > PAGE_SIZE_DIGITS:
            return self.max_page_size
        return min(int(digits), self.max_page_size)

    def page_size_error(self, message: str, code: str) -> ValidationError:
        return query_parameter_error(self.page_size_query_param, message, code)

    def decode_cursor(self, request):
        encoded = single_query_value(request.query_params, self.cursor_query_param)
        if encoded is None:
            return None
        if not CURSOR.fullmatch(encoded):
            raise self.cursor_error()
        try:
            cursor = super().decode_cursor(request)
        except NotFound as exc:
            raise self.cursor_error() from exc
        if cursor.position is not None and not self.is_position(cursor.position):
            raise self.cursor_error()
        return cursor

    def cursor_error(self) -> ValidationError:
        return query_parameter_error(
            self.cursor_query_param, self.invalid_cursor_message, "invalid"
        )

    def is_position(self, value: str) -> bool:
        """Whether a cursor's position could be one we wrote: a value of the ordering field.

        A forged one would otherwise reach the query, and fail there with a 500.
        """
        field = self.model._meta.get_field(self.ordering[0].lstrip("-"))
        try:
            field.to_python(value)
        except DjangoValidationError:
            return False
        # No value we store holds NUL, which PostgreSQL refuses in a query.
        return "\x00" not in value

    def get_schema_operation_parameters(self, view) -> list[dict]:
        cursor, page_size = super().get_schema_operation_parameters(view)
        cursor["description"] = "Where the page starts: copy it from `next` or `previous`."
        cursor["schema"]["pattern"] = f"^{CURSOR.pattern}$"
        page_size["description"] = (
            f"Results per page: {self.page_size} if not given, at most {self.max_page_size} "
            "(a larger number gives that many)."
        )
        page_size["schema"]["minimum"] = 1
        return [cursor, page_size]


class ResultPagination(NewestFirstPagination):
    """Results newest first, in pages that hold at most `max_page_bytes` of outputs.

    Outputs can be large (up to JOB_MAX_RESULT_BYTES each), so a page is chosen from the
    sizes stored beside them and only its outputs are loaded: two queries, whatever the page
    size. A page stops before the result whose output would take it past the budget. An
    output larger than the whole budget (stored before results had a limit, or under a
    higher one) is not loaded at all: the list shows it as null, and the result's own address
    returns it.
    """

    ordering = "-completed_at"
    max_page_bytes = 4 * 1024 * 1024

    def paginate_queryset(self, queryset, request, view=None):
        sized = super().paginate_queryset(queryset.defer("output"), request, view)
        page = self.cut_to_budget(sized)
        listed = [result.pk for result in page if self.lists_output(result)]
        outputs = {}
        if listed:
            chosen = queryset.model._default_manager.filter(pk__in=listed)
            outputs = dict(chosen.values_list("pk", "output"))
        for result in page:
            result.output = outputs.get(result.pk)
        return page

    def lists_output(self, result) -> bool:
        return result.output_bytes <= self.max_page_bytes

    def cut_to_budget(self, page: list) -> list:
        """Shorten the page to the results that fit the budget, as if it had been asked for so few.

        The results kept are those nearest the cursor, in the order the query read them (newest
        first, or oldest first for a `previous` link), and the positions DRF derives its links
        from are set as it would have set them for a page of that size.
        """
        backwards = self.cursor is not None and self.cursor.reverse
        read_order = page[::-1] if backwards else page
        kept, total = 0, 0
        for result in read_order:
            total += result.output_bytes if self.lists_output(result) else 0
            if total > self.max_page_bytes:
                break
            kept += 1
        if kept == len(page):
            return page
        following = self._get_position_from_instance(read_order[kept], self.ordering)
        self.page_size = kept
        if backwards:
            self.page = page[len(page) - kept :]
            self.has_previous, self.previous_position = True, following
        else:
            self.page = page[:kept]
            self.has_next, self.next_position = True, following
        self.display_page_controls = self.template is not None
        return self.page

from rest_framework.pagination import CursorPagination


class NewestFirstPagination(CursorPagination):
    """Cursor pages: as fast on page 1,000 as on page 1, and stable while jobs are added."""

    ordering = "-created_at"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class ResultPagination(NewestFirstPagination):
    ordering = "-completed_at"

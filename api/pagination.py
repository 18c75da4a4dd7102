from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Cursor over the primary key: stable while rows are written, and an index scan at any depth."""

    ordering = "pk"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

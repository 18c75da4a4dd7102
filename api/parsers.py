"""Request input checked at the edge, before any view sees it: bounded JSON depth, no NUL and no lone surrogates.

A JSON body nested thousands deep exhausts Python's recursion (in the parser, or later in code walking the value);
a NUL cannot be stored by PostgreSQL and a lone surrogate cannot be encoded as UTF-8 (not even to echo it in an
error). Both are refused here with a 400 naming what is wrong, for JSON bodies, form fields and query strings alike.
"""
import re

from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

MAX_JSON_DEPTH = 64  # arrays and objects inside one another; a rule at its deepest needs far fewer
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


class UnsafeInput(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_characters"
    default_detail = "The request holds a NUL character or a lone UTF-16 surrogate, which no field accepts."


class JsonTooDeep(ParseError):
    default_code = "json_too_deep"
    default_detail = f"JSON nests arrays and objects at most {MAX_JSON_DEPTH} levels deep."
    details = {"max_depth": MAX_JSON_DEPTH}


def has_forbidden_characters(text: str) -> bool:
    return _FORBIDDEN.search(text) is not None


def check_value(value) -> None:
    """Raise JsonTooDeep or UnsafeInput for a parsed value that nests too deep or holds a forbidden character
    (in a key or a string). Iterative: the value may be as deep as the parser allowed."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if has_forbidden_characters(item):
                raise UnsafeInput()
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise JsonTooDeep()
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise JsonTooDeep() from None
        check_value(data)
        return data


class RuleJSONParser(JSONParser):
    """JSON that may hold NaN or Infinity, as Python's parser reads it: in a rule, the rule language refuses such a
    value with the path of its node (a 400 like any bad rule) instead of the parser refusing the whole body."""

    strict = False


def _check_query_dict(data) -> None:
    for key, values in data.lists():
        if has_forbidden_characters(key) or any(isinstance(v, str) and has_forbidden_characters(v) for v in values):
            raise UnsafeInput()


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _check_query_dict(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        _check_query_dict(result.data)
        for upload in result.files.values():
            if has_forbidden_characters(upload.name or ""):
                raise UnsafeInput()
        return result

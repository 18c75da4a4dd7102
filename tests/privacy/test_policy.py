"""The privacy policy's catalogue of personal fields and the masking of single values (rules, explain)."""
import datetime as dt

from privacy.policy import PII_FIELDS, is_personal, mask_value
from segments.rules import rule_personal_fields


def test_the_personal_fields_include_the_id_number():
    assert set(PII_FIELDS) == {"full_name", "family_name", "given_name", "phone", "email", "address", "birth_date",
                               "id_number"}
    assert is_personal("id_number") and not is_personal("id_number_masked") and not is_personal("city")


def test_mask_value_masks_personal_text_dates_and_lists_and_leaves_the_rest():
    assert mask_value("phone", "+8613912875634") == "139****5634"
    assert mask_value("birth_date", dt.date(1958, 3, 23)) == "1958-**-**"
    assert mask_value("birth_date", ["1958-03-01", "1958-03-31"]) == ["1958-**-**", "1958-**-**"]
    assert mask_value("id_number", "110105195803231234") == "110***********1234"
    assert mask_value("birth_date", {"years_ago": 60}) == {"years_ago": 60}  # relative: names no one
    assert mask_value("city", "上海市") == "上海市" and mask_value("phone", None) is None


def test_rule_personal_fields_finds_conditions_anywhere_and_walks_any_depth():
    rule = {"any": [{"not": {"field": "email", "op": "is_null"}}, {"field": "city", "op": "eq", "value": "上海市"},
                    {"all": [{"field": "phone", "op": "startswith", "value": "+86136"}]},
                    {"activity": {"kind": "transactions", "where": [{"field": "kind", "op": "eq", "value": "x"}]}}]}
    assert rule_personal_fields(rule) == ["email", "phone"]
    deep = {"field": "birth_date", "op": "eq", "value": "1958-03-23"}
    for _ in range(10_000):  # deeper than the interpreter's stack: a request body may be
        deep = {"not": deep}
    assert rule_personal_fields(deep) == ["birth_date"]
    assert rule_personal_fields(None) == [] and rule_personal_fields("phone") == []

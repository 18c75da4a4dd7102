"""The rule language: every operator and node type against hand-computed answers, validation paths, explain."""
import pytest

from segments.rules import RuleContext, RuleError, catalogue, rule_explain, rule_queryset, rule_validate
from tags.models import TagAssignment, TagDefinition

from .conftest import NOW

pytestmark = pytest.mark.django_db


def names(rule) -> set[str]:
    ctx = RuleContext(now=NOW)
    rule_validate(rule, ctx)
    return {p.full_name.split()[0] for p in rule_queryset(rule, ctx)}


@pytest.mark.parametrize("leaf, expected", [
    ({"field": "gender", "op": "eq", "value": "F"}, {"Ann", "Cai"}),
    ({"field": "gender", "op": "ne", "value": "F"}, {"Bob"}),  # a missing value is never "not F"
    ({"field": "record_count", "op": "lt", "value": 2}, {"Bob", "Dee"}),
    ({"field": "record_count", "op": "lte", "value": 2}, {"Bob", "Cai", "Dee"}),
    ({"field": "record_count", "op": "gt", "value": 2}, {"Ann"}),
    ({"field": "record_count", "op": "gte", "value": 2}, {"Ann", "Cai"}),
    ({"field": "birth_date", "op": "between", "value": ["1985-03-01", "1990-06-15"]}, {"Bob", "Cai"}),
    ({"field": "city", "op": "in", "value": ["Beijing", "Shenzhen"]}, {"Bob"}),
    ({"field": "city", "op": "not_in", "value": ["Beijing"]}, {"Ann", "Cai"}),  # Dee has no city
    ({"field": "email", "op": "contains", "value": "qq.com"}, {"Ann", "Dee"}),  # case-insensitive
    ({"field": "full_name", "op": "startswith", "value": "b"}, {"Bob"}),
    ({"field": "email", "op": "is_null"}, {"Cai"}),
    ({"field": "city", "op": "is_null"}, {"Dee"}),  # an empty string counts as missing
    ({"field": "birth_date", "op": "is_not_null"}, {"Ann", "Bob", "Cai"}),
    ({"field": "birth_date", "op": "eq", "value": "1950-01-01"}, {"Ann"}),
    # aged 60 or more on 2026-01-10: born on or before 1966-01-10
    ({"field": "birth_date", "op": "lte", "value": {"years_ago": 60}}, {"Ann"}),
    # first seen within the last 30 days (by local date)
    ({"field": "created_at", "op": "gte", "value": {"days_ago": 30}}, {"Bob", "Dee"}),
    ({"field": "created_at", "op": "between", "value": [{"days_ago": 31}, {"days_ago": 20}]}, {"Bob", "Cai"}),
])
def test_each_operator_selects_the_hand_computed_profiles(people, leaf, expected):
    assert names(leaf) == expected


def test_groups_and_negation_nest(people):
    rule = {"all": [
        {"field": "city", "op": "eq", "value": "Shanghai"},
        {"any": [{"field": "record_count", "op": "gte", "value": 3}, {"not": {"field": "email", "op": "is_not_null"}}]},
    ]}
    assert names(rule) == {"Ann", "Cai"}
    assert names({"not": rule}) == {"Bob", "Dee"}
    # not of a comparison includes the profiles with no value: two-valued logic, as explain shows it
    assert names({"not": {"field": "gender", "op": "eq", "value": "F"}}) == {"Bob", "Dee"}


def test_tag_node_counts_only_assignments_in_force(people):
    vip = TagDefinition.objects.create(code="vip", name="VIP")
    TagAssignment.objects.create(tag=vip, profile=people["bob"], source="manual", assigned_at=NOW)
    TagAssignment.objects.create(tag=vip, profile=people["cai"], source="manual", assigned_at=NOW,
                                 expires_at=NOW.replace(year=2025))
    assert names({"tag": "vip"}) == {"Bob"}
    assert names({"all": [{"tag": "vip"}, {"field": "gender", "op": "eq", "value": "M"}]}) == {"Bob"}


def test_a_rule_compiles_to_one_query(people, django_assert_num_queries):
    TagDefinition.objects.create(code="vip", name="VIP")
    beijing_under_41 = {"all": [{"field": "city", "op": "eq", "value": "Beijing"},
                                {"field": "birth_date", "op": "gte", "value": {"days_ago": 15000}}]}
    rule = {"any": [{"tag": "vip"}, {"not": beijing_under_41}]}
    queryset = rule_queryset(rule, RuleContext(now=NOW))
    with django_assert_num_queries(1):
        assert len(list(queryset)) == 3


@pytest.mark.parametrize("rule, path, message", [
    ({"all": [{"field": "city", "op": "eq", "value": "x"}, {"field": "city", "op": "eq", "value": "x"},
              {"field": "record_count", "op": "gt", "value": "three"}]}, "all[2].value", "expects a number"),
    ({"any": [{"field": "salary", "op": "eq", "value": 1}]}, "any[0].field", "unknown field"),
    ({"field": "gender", "op": "contains", "value": "F"}, "op", "takes the operators"),
    ({"field": "gender", "op": "eq", "value": "X"}, "value", "expects one of M, F, U"),
    ({"all": []}, "all", "non-empty list"),
    ({"not": [1]}, "not", "must be an object"),
    ({"all": [{"not": {"field": "birth_date", "op": "lt", "value": {"weeks_ago": 2}}}]}, "all[0].not.value",
     "relative date"),
    ({"field": "birth_date", "op": "between", "value": ["2000-01-01", "1990-01-01"]}, "value", "low <= high"),
    ({"field": "city", "op": "in", "value": ["a", 3]}, "value[1]", "expects a non-empty string"),
    ({"field": "city", "op": "eq", "value": ""}, "value", "expects a non-empty string"),
    ({"field": "email", "op": "is_null", "value": "x"}, "value", "takes no value"),
    ({"field": "city", "op": "eq"}, "value", "needs a value"),
    ({"tag": "nope"}, "tag", "unknown tag"),
    ({"segment": "nope"}, "segment", "unknown segment"),
    ({"field": "city", "op": "eq", "value": "x", "extra": 1}, "extra", "unknown key"),
    ({"city": "x"}, "rule", "exactly one of"),
])
def test_validation_errors_name_the_path_of_the_bad_node(rule, path, message):
    with pytest.raises(RuleError) as error:
        rule_validate(rule, RuleContext(now=NOW))
    assert error.value.path == path
    assert message in error.value.message


def test_explain_shows_every_node_with_its_result_and_the_value_seen(people):
    TagDefinition.objects.create(code="vip", name="VIP")
    rule = {"all": [{"field": "city", "op": "eq", "value": "Shanghai"},
                    {"not": {"tag": "vip"}},
                    {"field": "birth_date", "op": "gte", "value": "1980-01-01"}]}

    explained = rule_explain(rule, profile=people["ann"], ctx=RuleContext(now=NOW), sees_clear=True)

    assert explained["result"] is False
    city, not_vip, birth = explained["children"]
    assert (city["path"], city["result"], city["value"]) == ("all[0]", True, "Shanghai")
    assert (not_vip["result"], not_vip["children"][0]["path"], not_vip["children"][0]["value"]) == \
        (True, "all[1].not", None)
    assert (birth["path"], birth["result"], birth["value"]) == ("all[2]", False, "1950-01-01")


def test_explain_masks_the_values_of_personal_fields_unless_the_reader_sees_them_clear(people):
    rule = {"all": [{"field": "city", "op": "eq", "value": "Shanghai"},
                    {"field": "birth_date", "op": "in", "value": ["1950-01-01", "1960-02-02"]}]}

    city, birth = rule_explain(rule, profile=people["ann"], ctx=RuleContext(now=NOW))["children"]

    assert (city["value"], city["node"]["value"]) == ("Shanghai", "Shanghai")
    assert (birth["result"], birth["value"]) == (True, "1950-**-**")
    assert birth["node"] == {"field": "birth_date", "op": "in", "value": ["1950-**-**", "1960-**-**"]}
    assert rule == {"all": [{"field": "city", "op": "eq", "value": "Shanghai"},  # the rule itself is left alone
                            {"field": "birth_date", "op": "in", "value": ["1950-01-01", "1960-02-02"]}]}


def test_catalogue_lists_fields_with_types_ops_and_examples():
    fields = {f["name"]: f for f in catalogue()}
    assert fields["birth_date"]["type"] == "date" and "between" in fields["birth_date"]["ops"]
    assert fields["gender"]["choices"] == ["M", "F", "U"] and "contains" not in fields["gender"]["ops"]
    assert all(f["label"] and f["examples"] for f in fields.values())
    assert {name for name, f in fields.items() if f["personal"]} == {
        "full_name", "family_name", "given_name", "birth_date", "phone", "email", "address"}


@pytest.mark.parametrize("rule,path", [
    ({"all": [{"field": "gender", "op": "eq", "value": "F"}, {"field": "city", "op": "in", "value": ["a", "b\x00"]}]},
     "all[1]"),
    ({"any": [{"tag": "vip\x00"}]}, "any[0]"),
    ({"not": {"segment": "\ud800"}}, "not"),
    ({"activity": {"kind": "transactions", "where": [{"field": "kind", "op": "eq", "value": "a\udfff"}]}}, "rule"),
])
def test_a_nul_or_lone_surrogate_anywhere_in_a_rule_is_refused_with_its_node(rule, path):
    with pytest.raises(RuleError) as refused:
        rule_validate(rule)

    assert refused.value.path == path
    assert "NUL" in refused.value.message

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from segments.models import Segment
from segments.services import segment_save

pytestmark = pytest.mark.django_db


def test_refresh_segments_by_slug_in_dependency_order(people, capsys):
    segment_save(segment=Segment(name="W", slug="women", rule={"field": "gender", "op": "eq", "value": "F"}))
    segment_save(segment=Segment(name="A", slug="a-uses-women", rule={"segment": "women"}))

    call_command("refresh_segments", "a-uses-women", "women")

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["women", "a-uses-women"]
    assert "succeeded, 2 members, +2 -0" in lines[1]
    assert Segment.objects.get(slug="a-uses-women").member_count == 2


def test_refresh_segments_due_and_all(people, capsys):
    segment_save(segment=Segment(name="W", slug="women", rule={"field": "gender", "op": "eq", "value": "F"}))
    call_command("refresh_segments", "--due")
    call_command("refresh_segments", "--due")  # just refreshed: not due again
    call_command("refresh_segments", "--all")
    assert capsys.readouterr().out.count("women: succeeded") == 2


def test_refresh_segments_needs_exactly_one_selection():
    with pytest.raises(CommandError):
        call_command("refresh_segments")
    with pytest.raises(CommandError):
        call_command("refresh_segments", "nope")

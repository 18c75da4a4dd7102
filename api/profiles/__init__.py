"""Profile endpoints: list, retrieve, lookup and the sub-resources of a profile."""

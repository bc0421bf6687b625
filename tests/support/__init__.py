"""Helpers shared by the tests (no tests here): the tier rules and waiting for conditions."""

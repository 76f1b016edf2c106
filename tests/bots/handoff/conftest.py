"""Fixtures of the replica tests (real bot processes on PostgreSQL), for the relay crash test."""

from tests.test_replicas import model, pg, session, slack  # noqa: F401

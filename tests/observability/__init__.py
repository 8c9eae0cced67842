"""Tests of the cross-cutting observability (server/jobstatus_server/observability):
tracing.
"""

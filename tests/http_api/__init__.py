"""Tests of the HTTP transport (server/jobstatus_server/http_api): the REST paths and their
errors, SSE, OpenAPI, the dashboard.
"""

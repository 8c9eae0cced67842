"""Tests of the use cases (server/jobstatus_server/usecases): writes, time-driven
transitions, paging, history.
"""

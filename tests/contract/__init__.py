"""Tests of the contract layer (server/jobstatus_server/contract): the kinds' rules,
validation, documented shapes, wire encoding.
"""

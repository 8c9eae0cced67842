"""Tests of the gRPC transport (server/jobstatus_server/grpc_api): watch, health,
reflection, hostile and fuzzed input.
"""

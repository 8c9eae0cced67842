"""Tests of the state layer (server/jobstatus_server/state): the store and its writers,
replicas, the view, the hub, migrations.
"""

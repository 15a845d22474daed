"""Several wasup nodes on one PostgreSQL.

:mod:`.feed` hands every node's events, read from the event log, to this node's WebSocket
streams. docs/cluster.md describes the deployment and the failure behaviour.
"""

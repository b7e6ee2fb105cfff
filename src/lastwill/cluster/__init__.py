"""lastwill in a cluster: several nodes on one engine (Redis 7), one broker to every client.

``engine.RedisEngine`` runs the Lua scripts of ``scripts/`` (the only writers of cluster state, each
atomic and fenced by the caller's epoch); ``model`` holds what they take and return; ``seams`` the
Protocols the broker core calls; ``replica.RouteReplica`` a node's copy of the subscription table;
``lease.LocalLease`` a node's own view of its lease. Only imported in cluster mode (needs the
``cluster`` extra: ``pip install lastwill[cluster]``). See docs/cluster.md.
"""

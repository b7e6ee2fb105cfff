"""A cluster node's counters (edge/cluster.py ``ClusterNode.stats``) on the admin API's /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import ClusterNode

_METRICS = {  # ClusterNode.stats key -> (metric name, help)
    "leases_renewed": ("lastwill_cluster_leases_renewed", "Heartbeats that renewed this node's lease"),
    "leases_missed": ("lastwill_cluster_leases_missed", "Heartbeats that failed (engine unreachable or fenced)"),
    "fenced": ("lastwill_cluster_fencing_events", "Times this node fenced itself (closed its clients, new epoch)"),
    "epochs_reaped": ("lastwill_cluster_epochs_reaped", "Dead nodes' epochs this node fenced and took over"),
    "wills_fired": ("lastwill_cluster_wills_fired", "Wills this node claimed and published"),
    "wills_fired_dead_node": ("lastwill_cluster_wills_fired_for_dead_node",
                              "Wills this node published for clients of a dead node"),
    "claims_lost": ("lastwill_cluster_claims_lost", "Due wills another node claimed first (or a reconnect cancelled)"),
    "stale_routes": ("lastwill_cluster_stale_routes", "Publishes or claims routed again on a newer table"),
    "commits": ("lastwill_cluster_commits", "Pipelines of a loop turn's changes sent to the engine"),
    "connects_refused_unavailable": ("lastwill_cluster_connects_refused",
                                     "CONNECTs refused with 0x88 / rc 3: the engine could not be reached"),
    "connects_served_alone": ("lastwill_cluster_connects_served_alone",
                              "CONNECTs with nothing to keep accepted while the engine could not be reached"),
}


class ClusterCollector:
    """The node's cluster counters for the admin API's /metrics, read at scrape time."""

    def __init__(self, node: ClusterNode):
        self.node = node

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.node.stats
        for key, (name, text) in _METRICS.items():
            yield CounterMetricFamily(name, text, value=stats.get(key, 0))
        yield GaugeMetricFamily("lastwill_cluster_epoch", "This node's current epoch in the cluster",
                                value=self.node.epoch)

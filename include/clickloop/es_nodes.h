/* es_nodes: which cluster node the next request goes to. Pure bookkeeping
 * with the clock passed in, so tests drive it with a fake one.
 *
 * Requests go round robin over the configured nodes, skipping nodes that are
 * marked down. A node is marked down for `down_for_ms` when a request to it
 * failed at the transport level (refused, reset, timed out) or it answered
 * 5xx, and marked up again by any other answer. When every node is down, the
 * one whose down period ends first is used anyway: requests keep probing the
 * cluster (at the pace of their backoff) instead of stalling until a timer
 * says a node may be back. */
#ifndef CLICKLOOP_ES_NODES_H
#define CLICKLOOP_ES_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cl_es_nodes_s {
    size_t count;
    size_t next;          /* where the round robin continues */
    uint64_t *down_until; /* per node; 0 = up */
    uint64_t down_for_ms;
} cl_es_nodes_t;

/* count >= 1. */
void cl_es_nodes_init(cl_es_nodes_t *nodes, size_t count, uint64_t down_for_ms);
void cl_es_nodes_free(cl_es_nodes_t *nodes);

/* The node for the next request at time now_ms. */
size_t cl_es_nodes_pick(cl_es_nodes_t *nodes, uint64_t now_ms);

/* A request to `node` failed at the transport level or with a 5xx. */
void cl_es_nodes_mark_down(cl_es_nodes_t *nodes, size_t node, uint64_t now_ms);
/* `node` answered (anything but 5xx). */
void cl_es_nodes_mark_up(cl_es_nodes_t *nodes, size_t node);

bool cl_es_nodes_is_down(const cl_es_nodes_t *nodes, size_t node, uint64_t now_ms);
/* Nodes not marked down at now_ms. */
size_t cl_es_nodes_up_count(const cl_es_nodes_t *nodes, uint64_t now_ms);

#endif

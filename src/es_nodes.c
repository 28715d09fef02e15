/* es_nodes: round robin over cluster nodes with down marking; see
 * include/clickloop/es_nodes.h. Pure: the clock is a parameter. */
#include "clickloop/es_nodes.h"

#include <stdlib.h>

#include "clickloop/common.h"

void cl_es_nodes_init(cl_es_nodes_t *nodes, size_t count, uint64_t down_for_ms)
{
    nodes->count = count;
    nodes->next = 0;
    nodes->down_until = cl_xcalloc(count, sizeof *nodes->down_until);
    nodes->down_for_ms = down_for_ms;
}

void cl_es_nodes_free(cl_es_nodes_t *nodes)
{
    free(nodes->down_until);
    nodes->down_until = NULL;
    nodes->count = 0;
}

bool cl_es_nodes_is_down(const cl_es_nodes_t *nodes, size_t node, uint64_t now_ms)
{
    return nodes->down_until[node] > now_ms;
}

size_t cl_es_nodes_pick(cl_es_nodes_t *nodes, uint64_t now_ms)
{
    size_t soonest = nodes->next % nodes->count;
    for (size_t k = 0; k < nodes->count; k++) {
        size_t i = (nodes->next + k) % nodes->count;
        if (!cl_es_nodes_is_down(nodes, i, now_ms)) {
            nodes->next = (i + 1) % nodes->count;
            return i;
        }
        if (nodes->down_until[i] < nodes->down_until[soonest])
            soonest = i;
    }
    nodes->next = (soonest + 1) % nodes->count;
    return soonest;
}

void cl_es_nodes_mark_down(cl_es_nodes_t *nodes, size_t node, uint64_t now_ms)
{
    nodes->down_until[node] = now_ms + nodes->down_for_ms;
}

void cl_es_nodes_mark_up(cl_es_nodes_t *nodes, size_t node)
{
    nodes->down_until[node] = 0;
}

size_t cl_es_nodes_up_count(const cl_es_nodes_t *nodes, uint64_t now_ms)
{
    size_t up = 0;
    for (size_t i = 0; i < nodes->count; i++)
        up += !cl_es_nodes_is_down(nodes, i, now_ms);
    return up;
}

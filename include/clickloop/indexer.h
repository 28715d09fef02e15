/* The indexer: moves aggregates from MariaDB (agg_stats rows that need
 * indexing) into Elasticsearch/OpenSearch through the es_sink, and records in
 * MariaDB which version of each row the index holds.
 *
 * MariaDB stays the source of truth: a row is marked indexed only after the
 * cluster acknowledged that version, so an outage of the search cluster, a
 * crash or a restart only delays documents, never loses them. Documents carry
 * their row's version as an external version, so resending is harmless and an
 * old copy never overwrites a newer one.
 *
 * Memory is bounded: a page of rows is fetched only while the sink holds
 * fewer than `max_pending_docs` documents.
 *
 * It runs as a periodic database job (dbjob.h), polling every
 * poll_interval_ms, and logs what happens in it itself (component
 * "indexer"). */
#ifndef CLICKLOOP_INDEXER_H
#define CLICKLOOP_INDEXER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "clickloop/common.h"
#include "clickloop/db_pool.h"
#include "clickloop/es_sink.h"

typedef struct cl_indexer_s cl_indexer_t;

typedef struct cl_indexer_params_s {
    cl_db_params_t db;         /* its own connection (a dbjob, dbjob.h); strings copied */
    const char *index;         /* configured index name, may hold %Y %m %d; copied */
    size_t page_rows;          /* rows per SELECT */
    size_t max_pending_docs;   /* fetch no more while the sink holds this many */
    uint64_t poll_interval_ms; /* look for work at least this often */
} cl_indexer_params_t;

/* How often the indexer looks for work when no run kicked it. */
#define CL_INDEXER_POLL_INTERVAL_MS 1000u

struct cl_config_s;
/* The `elasticsearch` section's index and page size, the connection of
 * `mariadb`; documents held in memory are bounded by what keeps every bulk
 * slot busy (bulk_max_docs x max_in_flight x 2) and no more. */
void cl_indexer_params_from_config(const struct cl_config_s *config, cl_indexer_params_t *params);

typedef struct cl_indexer_stats_s {
    uint64_t docs_sent;     /* documents handed to the sink */
    uint64_t docs_acked;    /* versions recorded as indexed */
    uint64_t docs_failed;   /* permanent refusals recorded in agg_stats.index_error */
    uint64_t ticks_skipped; /* poll ticks that found a page in flight */
    bool index_ready;       /* index or template is in place */
} cl_indexer_stats_t;

/* Create; the sink is borrowed (the indexer becomes its document callback's
 * user: create the sink with cl_indexer_doc_cb and the indexer as arg, then
 * attach it with cl_indexer_set_sink). */
int cl_indexer_new(uv_loop_t *loop, const cl_indexer_params_t *params, cl_indexer_t **out,
                   char err[CL_ERR_LEN]);
void cl_indexer_doc_cb(void *indexer, uint64_t tag, cl_es_doc_outcome_t outcome,
                       const char *reason);
/* Attach a sink (NULL detaches: nothing more is sent). Replacing a sink is
 * allowed while running (new connection settings): attach the new one, then
 * close the old one, whose documents then report CANCELLED here and stay
 * marked in MariaDB; call cl_indexer_start again to prepare the index on the
 * new sink, before which nothing is sent to it. The indexer must outlive
 * every sink it was attached to. */
void cl_indexer_set_sink(cl_indexer_t *ix, cl_es_sink_t *sink);
/* Make sure the index/template exists on the attached sink, then start (or
 * keep) moving rows. */
int cl_indexer_start(cl_indexer_t *ix, char err[CL_ERR_LEN]);
/* New rows may need indexing (an aggregation run changed some): look now. */
void cl_indexer_kick(cl_indexer_t *ix);
void cl_indexer_stats(const cl_indexer_t *ix, cl_indexer_stats_t *out);
/* Stop fetching, write the acknowledgements collected so far, wait for the
 * page and the updates in flight and for every document's outcome, then close
 * the job and free; cb runs when done. Close the sink first (its cancelled
 * documents simply stay marked as needing indexing). CL_ERR when already
 * closing. */
int cl_indexer_close(cl_indexer_t *ix, cl_close_cb cb, void *arg);

#endif

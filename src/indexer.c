/* The indexer: agg_stats rows -> es_sink -> acknowledgements in agg_stats;
 * see indexer.h.
 *
 * One SELECT page at a time, walking agg_stats in key order with a cursor.
 * When a page comes back short, the walk has reached the end; it starts again
 * from the first key only once nothing is in flight, so a row is never sent
 * twice while its first copy is still on the way. */
#include "clickloop/indexer.h"
#include "clickloop/config.h"

#include <stdlib.h>
#include <string.h>

#include "clickloop/agg_stats.h"
#include "clickloop/buf.h"
#include "clickloop/es_doc.h"
#include "clickloop/log.h"

/* Acknowledgements are written in one UPDATE once this many are collected,
 * or at the next poll tick. */
#define CL_INDEXER_ACK_BATCH 500

/* A document handed to the sink; its address is the sink's tag. */
typedef struct {
    cl_aggregate_key_t key;
    uint64_t version;
} inflight_t;

/* A document built from a SELECT row, submitted when the page is complete
 * (the row callback must not start anything). */
typedef struct {
    char index[CL_ES_INDEX_MAX_LEN + 1];
    char id[CL_ES_DOC_ID_SIZE];
    cl_buf_t source;
    inflight_t *inflight;
} page_doc_t;

/* An index setup in flight, and the sink it was asked of. */
typedef struct {
    cl_indexer_t *ix;
    unsigned sink_generation;
} ensure_t;

/* A query in flight owns its SQL text until its done callback. */
typedef struct {
    cl_indexer_t *ix;
    cl_buf_t sql;
} query_t;

struct cl_indexer_s {
    uv_loop_t *loop;
    cl_db_pool_t *pool;
    cl_es_sink_t *sink;
    char *index;
    size_t page_rows;
    size_t max_pending;
    uint64_t poll_ms;
    uv_timer_t timer;
    bool index_ready;
    bool fetching;
    bool at_end;
    bool have_cursor;
    bool closing;
    /* Counts sinks attached: an index setup answered by a sink that has been
     * replaced since (cl_indexer_set_sink) is ignored. */
    unsigned sink_generation;
    cl_aggregate_key_t cursor;
    page_doc_t *page;
    size_t page_count;
    cl_aggregate_indexed_t *acks;
    size_t ack_count, ack_cap;
    unsigned updates_in_flight;
    size_t docs_outstanding; /* submitted, no outcome yet */
    cl_indexer_stats_t stats;
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void pump(cl_indexer_t *ix, bool may_restart);
static void flush_acks(cl_indexer_t *ix);
static void maybe_finish_close(cl_indexer_t *ix);

void cl_indexer_params_from_config(const cl_config_t *c, cl_indexer_params_t *p)
{
    memset(p, 0, sizeof *p);
    cl_db_params_from_config(c, &p->db);
    p->index = c->elasticsearch.index;
    p->page_rows = c->elasticsearch.bulk_max_docs;
    p->max_pending_docs =
        (size_t)c->elasticsearch.bulk_max_docs * c->elasticsearch.max_in_flight * 2;
    p->poll_interval_ms = CL_INDEXER_POLL_INTERVAL_MS;
}

int cl_indexer_new(uv_loop_t *loop, const cl_indexer_params_t *params, cl_indexer_t **out,
                   char err[CL_ERR_LEN])
{
    cl_indexer_t *ix = cl_xcalloc(1, sizeof *ix);
    ix->loop = loop;
    ix->index = cl_xstrdup(params->index);
    ix->page_rows = params->page_rows ? params->page_rows : 1000;
    ix->max_pending = params->max_pending_docs ? params->max_pending_docs : 5000;
    ix->poll_ms = params->poll_interval_ms ? params->poll_interval_ms : 1000;
    if (cl_db_pool_open(loop, &params->db, 1, params->on_db_event, params->db_event_arg, &ix->pool,
                        err) != CL_OK) {
        free(ix->index);
        free(ix);
        return CL_ERR;
    }
    uv_timer_init(loop, &ix->timer);
    ix->timer.data = ix;
    *out = ix;
    return CL_OK;
}

void cl_indexer_set_sink(cl_indexer_t *ix, cl_es_sink_t *sink)
{
    if (sink == ix->sink)
        return;
    /* Documents handed to the previous sink still report here (a closed sink
     * reports them CANCELLED), so docs_outstanding keeps counting them. The
     * new sink may lead to another cluster: nothing goes to it before the
     * index is prepared there again (cl_indexer_start). */
    ix->sink = sink;
    ix->sink_generation++;
    ix->index_ready = false;
}

void cl_indexer_stats(const cl_indexer_t *ix, cl_indexer_stats_t *out)
{
    *out = ix->stats;
    out->index_ready = ix->index_ready;
}

static void on_timer(uv_timer_t *t)
{
    cl_indexer_t *ix = t->data;
    flush_acks(ix);
    pump(ix, true);
}

static void on_index_ready(void *arg, int status, const char *message)
{
    ensure_t *e = arg;
    cl_indexer_t *ix = e->ix;
    bool current = e->sink_generation == ix->sink_generation;
    free(e);
    /* A replaced sink answers its pending setup with CL_ERR_RETRY when it
     * closes: not a problem of the index. */
    if (ix->closing || !current)
        return;
    if (status != CL_OK) {
        /* A permanent refusal (e.g. an existing index with a conflicting
         * mapping): documents would fail one by one; say why, and keep the
         * rows waiting in MariaDB until an operator fixes it and restarts. */
        cl_log_error("indexer", "cannot prepare index %s: %s; aggregates wait in MariaDB",
                     ix->index, message);
        return;
    }
    cl_log_info("indexer", "index %s ready", ix->index);
    ix->index_ready = true;
    pump(ix, true);
}

int cl_indexer_start(cl_indexer_t *ix, char err[CL_ERR_LEN])
{
    ensure_t *e = cl_xmalloc(sizeof *e);
    e->ix = ix;
    e->sink_generation = ix->sink_generation;
    if (cl_es_sink_ensure_index(ix->sink, ix->index, cl_es_stats_mappings(), on_index_ready, e,
                                err) != CL_OK) {
        free(e);
        return CL_ERR;
    }
    uv_timer_start(&ix->timer, on_timer, ix->poll_ms, ix->poll_ms);
    return CL_OK;
}

void cl_indexer_kick(cl_indexer_t *ix)
{
    pump(ix, true);
}

/* ---- acknowledgements ---------------------------------------------------- */

static void on_update_done(void *arg, const cl_db_result_t *r)
{
    query_t *q = arg;
    cl_indexer_t *ix = q->ix;
    ix->updates_in_flight--;
    if (r->status != CL_OK)
        /* The rows keep needs_index = 1 and are sent again later: harmless,
         * the cluster keeps the highest version. */
        cl_log_warn("indexer", "recording indexed versions failed: %s", r->message);
    cl_buf_free(&q->sql);
    free(q);
    if (ix->closing)
        maybe_finish_close(ix);
    else
        pump(ix, false);
}

static void run_update(cl_indexer_t *ix, query_t *q)
{
    static const cl_db_query_handlers_t h = {.row = NULL, .done = on_update_done};
    char err[CL_ERR_LEN];
    ix->updates_in_flight++;
    if (cl_db_pool_query(ix->pool, q->sql.data, q->sql.len, &h, q, err) != CL_OK) {
        ix->updates_in_flight--;
        cl_log_warn("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
    }
}

static void flush_acks(cl_indexer_t *ix)
{
    if (ix->ack_count == 0)
        return;
    query_t *q = cl_xcalloc(1, sizeof *q);
    q->ix = ix;
    cl_buf_init(&q->sql);
    char err[CL_ERR_LEN];
    if (cl_aggregate_mark_indexed_sql(&q->sql, ix->acks, ix->ack_count, err) != CL_OK) {
        cl_log_error("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
    } else {
        ix->stats.docs_acked += ix->ack_count;
        run_update(ix, q);
    }
    ix->ack_count = 0;
}

static void record_failure(cl_indexer_t *ix, const inflight_t *f, const char *reason)
{
    query_t *q = cl_xcalloc(1, sizeof *q);
    q->ix = ix;
    cl_buf_init(&q->sql);
    char err[CL_ERR_LEN];
    if (cl_aggregate_mark_failed_sql(&q->sql, &f->key, f->version, reason, cl_db_escape_string,
                                     err) != CL_OK) {
        cl_log_error("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
        return;
    }
    run_update(ix, q);
}

void cl_indexer_doc_cb(void *arg, uint64_t tag, cl_es_doc_outcome_t outcome, const char *reason)
{
    cl_indexer_t *ix = arg;
    inflight_t *f = (inflight_t *)(uintptr_t)tag;
    ix->docs_outstanding--;
    switch (outcome) {
    case CL_ES_DOC_INDEXED:
    case CL_ES_DOC_SUPERSEDED: /* the index already holds this version or a newer one */
        if (ix->ack_count == ix->ack_cap) {
            ix->ack_cap = ix->ack_cap ? ix->ack_cap * 2 : 256;
            ix->acks = cl_xrealloc(ix->acks, ix->ack_cap * sizeof *ix->acks);
        }
        ix->acks[ix->ack_count].key = f->key;
        ix->acks[ix->ack_count].version = f->version;
        ix->ack_count++;
        if (ix->ack_count >= CL_INDEXER_ACK_BATCH && !ix->closing)
            flush_acks(ix);
        break;
    case CL_ES_DOC_FAILED:
        ix->stats.docs_failed++;
        cl_log_warn("indexer", "document %s/%lld/%s refused: %s", f->key.country,
                    (long long)f->key.window_start_ms, f->key.url_hash_hex,
                    reason != NULL ? reason : "");
        record_failure(ix, f, reason != NULL ? reason : "refused");
        break;
    case CL_ES_DOC_CANCELLED: /* shutdown: the row still needs indexing */
        break;
    }
    free(f);
    if (ix->closing)
        maybe_finish_close(ix);
}

/* ---- fetching ------------------------------------------------------------ */

static void on_row(void *arg, unsigned int statement, unsigned int field_count,
                   const char *const *values, const unsigned long *lengths)
{
    CL_UNUSED(statement);
    cl_indexer_t *ix = ((query_t *)arg)->ix;
    cl_aggregate_stat_t st;
    char err[CL_ERR_LEN];
    if (ix->page_count >= ix->page_rows)
        return; /* the SELECT has a LIMIT; defensive */
    if (cl_aggregate_parse_stat(field_count, values, lengths, &st, err) != CL_OK) {
        cl_log_error("indexer", "unexpected agg_stats row: %s", err);
        return;
    }
    /* The cursor moves over every row, even one that cannot be sent. */
    ix->cursor = st.key;
    ix->have_cursor = true;

    char window[CL_ES_WINDOW_LABEL_SIZE];
    cl_es_window_label(st.key.window_ms, window);
    cl_es_stats_doc_t doc = {
        .window = window,
        .window_start_ms = st.key.window_start_ms,
        .window_end_ms = st.key.window_start_ms + (int64_t)st.key.window_ms,
        .url = st.url,
        .url_len = st.url_len,
        .url_sha256_hex = st.key.url_hash_hex,
        .country = st.key.country,
        .clicks = st.clicks,
        .unique_users = st.unique_users,
        .time_spent_samples = st.time_spent_samples,
        .avg_time_spent_ms = st.time_spent_samples > 0
                                 ? (double)st.time_spent_sum / (double)st.time_spent_samples
                                 : 0.0,
        .updated_at_ms = st.updated_at_ms,
    };
    page_doc_t *d = &ix->page[ix->page_count];
    if (cl_es_index_name(ix->index, st.key.window_start_ms, d->index, sizeof d->index) < 0 ||
        cl_es_stats_doc_id(&doc, d->id, err) != CL_OK) {
        cl_log_error("indexer", "cannot name the document of window %lld: %s",
                     (long long)st.key.window_start_ms, err);
        return;
    }
    cl_buf_init(&d->source);
    cl_es_stats_source(&d->source, &doc);
    d->inflight = cl_xmalloc(sizeof *d->inflight);
    d->inflight->key = st.key;
    d->inflight->version = st.version;
    ix->page_count++;
}

static void submit_page(cl_indexer_t *ix)
{
    for (size_t i = 0; i < ix->page_count; i++) {
        page_doc_t *d = &ix->page[i];
        cl_es_doc_t doc = {
            .index = d->index,
            .id = d->id,
            .source = d->source.data,
            .source_len = d->source.len,
            .version = d->inflight->version,
            .tag = (uint64_t)(uintptr_t)d->inflight,
        };
        char err[CL_ERR_LEN];
        if (cl_es_sink_submit(ix->sink, &doc, 1, err) == CL_OK) {
            ix->docs_outstanding++;
            ix->stats.docs_sent++;
        } else {
            cl_log_error("indexer", "document %s not submitted: %s", d->id, err);
            free(d->inflight);
        }
        cl_buf_free(&d->source);
    }
    ix->page_count = 0;
}

static void on_select_done(void *arg, const cl_db_result_t *r)
{
    query_t *q = arg;
    cl_indexer_t *ix = q->ix;
    ix->fetching = false;
    size_t rows = ix->page_count;
    /* The sink may have been taken away (shutdown) or replaced by one whose
     * index is not prepared yet (reload) while the SELECT ran: then the page
     * is dropped. Its rows keep needs_index = 1, and the walk starts over
     * from the first key once nothing is outstanding, so they are read again. */
    bool drop = ix->closing || ix->sink == NULL || !ix->index_ready;
    if (drop) {
        for (size_t i = 0; i < ix->page_count; i++) {
            cl_buf_free(&ix->page[i].source);
            free(ix->page[i].inflight);
        }
        ix->page_count = 0;
    } else {
        submit_page(ix);
    }
    cl_buf_free(&q->sql);
    free(q);
    if (ix->closing) {
        maybe_finish_close(ix);
        return;
    }
    if (r->status != CL_OK) {
        cl_log_warn("indexer", "reading aggregates to index failed: %s; trying again", r->message);
        return; /* the poll timer tries again */
    }
    if (drop) {
        cl_log_debug("indexer", "page of %zu row(s) dropped: no sink ready for it", rows);
        ix->at_end = true;
        return;
    }
    cl_log_debug("indexer", "page of %zu row(s) read, %zu document(s) outstanding", rows,
                 ix->docs_outstanding);
    if (rows < ix->page_rows)
        ix->at_end = true;
    pump(ix, false);
}

/* may_restart: allowed to start a new walk from the first key. Only the
 * timer and kicks may, so an idle indexer reads once per tick, not in a loop. */
static void pump(cl_indexer_t *ix, bool may_restart)
{
    if (!ix->index_ready || ix->fetching || ix->closing || ix->sink == NULL)
        return;
    if (cl_es_sink_pending(ix->sink) >= ix->max_pending)
        return;
    if (ix->at_end) {
        /* Start over only when nothing is on its way, so no row is fetched
         * again while its document or acknowledgement is in flight. */
        if (!may_restart || ix->docs_outstanding > 0 || ix->ack_count > 0 ||
            ix->updates_in_flight > 0)
            return;
        ix->at_end = false;
        ix->have_cursor = false;
    }
    query_t *q = cl_xcalloc(1, sizeof *q);
    q->ix = ix;
    cl_buf_init(&q->sql);
    char err[CL_ERR_LEN];
    if (cl_aggregate_index_select_sql(&q->sql, ix->page_rows, ix->have_cursor ? &ix->cursor : NULL,
                                      err) != CL_OK) {
        cl_log_error("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
        return;
    }
    ix->page = cl_xrealloc(ix->page, ix->page_rows * sizeof *ix->page);
    ix->page_count = 0;
    static const cl_db_query_handlers_t h = {.row = on_row, .done = on_select_done};
    ix->fetching = true;
    if (cl_db_pool_query(ix->pool, q->sql.data, q->sql.len, &h, q, err) != CL_OK) {
        ix->fetching = false;
        cl_log_warn("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
    }
}

/* ---- close --------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
    cl_indexer_t *ix = h->data;
    void (*cb)(void *) = ix->close_cb;
    void *cb_arg = ix->close_arg;
    free(ix->acks);
    free(ix->page);
    free(ix->index);
    free(ix);
    if (cb != NULL)
        cb(cb_arg);
}

static void on_pool_closed(void *arg)
{
    cl_indexer_t *ix = arg;
    uv_close((uv_handle_t *)&ix->timer, on_timer_closed);
}

static void maybe_finish_close(cl_indexer_t *ix)
{
    if (ix->fetching || ix->updates_in_flight > 0 || ix->docs_outstanding > 0 || ix->pool == NULL)
        return;
    cl_db_pool_t *pool = ix->pool;
    ix->pool = NULL;
    if (cl_db_pool_close(pool, on_pool_closed, ix) != CL_OK)
        on_pool_closed(ix);
}

int cl_indexer_close(cl_indexer_t *ix, void (*cb)(void *arg), void *arg)
{
    ix->close_cb = cb;
    ix->close_arg = arg;
    uv_timer_stop(&ix->timer);
    flush_acks(ix);
    ix->closing = true;
    maybe_finish_close(ix);
    return CL_OK;
}

/* The indexer: agg_stats rows -> es_sink -> acknowledgements in agg_stats;
 * see indexer.h.
 *
 * One SELECT page at a time, walking agg_stats in key order with a cursor.
 * When a page comes back short, the walk has reached the end; it starts again
 * from the first key only once nothing is in flight, so a row is never sent
 * twice while its first copy is still on the way.
 *
 * The walk runs on a periodic database job (dbjob.h): a run fetches pages
 * one after the other until the walk reaches its end, the sink holds enough,
 * or the index is not ready; the job's ticks (the poll interval), kicks and
 * finished acknowledgements start the next run. Acknowledgements are written
 * outside runs, on the job's connection too. */
#include "clickloop/indexer.h"
#include "clickloop/config.h"

#include <stdlib.h>
#include <string.h>

#include "clickloop/agg_stats.h"
#include "clickloop/buf.h"
#include "clickloop/dbjob.h"
#include "clickloop/es_doc.h"
#include "clickloop/log.h"

/* Acknowledgements are written in one UPDATE once this many are collected,
 * at the next run, or after a page when the last UPDATE is a poll interval
 * old. */
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

/* Where the indexer stands. A page SELECT in flight is the job's run in
 * progress (CL_DBJOB_RUNNING). */
typedef enum {
    IX_UNPREPARED = 0, /* no sink, or its index not prepared yet: nothing is fetched */
    IX_AT_END,         /* between walks: the next starts from the first key once nothing
                          is in flight */
    IX_FIRST_PAGE,     /* a walk begins: its first page is next, or in flight */
    IX_NEXT_PAGE,      /* the next page starts after the cursor */
    IX_DRAINING,       /* closing: waiting for what is in flight */
    IX_CLOSING_JOB,    /* closing: the job closes, then the indexer is freed */
} ix_state_t;

struct cl_indexer_s {
    cl_dbjob_t *job;
    cl_es_sink_t *sink;
    char *index;
    size_t page_rows;
    size_t max_pending;
    uint64_t poll_ms;
    ix_state_t state;
    uint64_t last_flush_ms;
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
    cl_close_cb close_cb;
    void *close_arg;
};

static bool fetch_page(cl_indexer_t *ix, bool may_restart);
static void flush_acks(cl_indexer_t *ix);
static void maybe_finish_close(cl_indexer_t *ix);

static bool closing(const cl_indexer_t *ix)
{
    return ix->state == IX_DRAINING || ix->state == IX_CLOSING_JOB;
}

static bool fetching(const cl_indexer_t *ix)
{
    return cl_dbjob_state(ix->job) == CL_DBJOB_RUNNING;
}

/* A run of the job: a tick, a kick, or the walk going on after an
 * acknowledgement made room. */
static void on_job_run(void *arg, bool manual)
{
    cl_indexer_t *ix = arg;
    CL_UNUSED(manual);
    if (!closing(ix))
        flush_acks(ix);
    if (closing(ix) || !fetch_page(ix, true))
        cl_dbjob_run_end(ix->job);
}

/* Start a run unless one is in progress (which goes on by itself). */
static void run_soon(cl_indexer_t *ix)
{
    char err[CL_ERR_LEN];
    (void)cl_dbjob_run_now(ix->job, err);
}

void cl_indexer_params_from_config(const cl_config_t *c, cl_indexer_params_t *p)
{
    memset(p, 0, sizeof *p);
    cl_db_params_from_config(c, &p->db);
    p->db.label = "indexer";
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
    ix->page_rows = params->page_rows ? params->page_rows : 1000;
    ix->max_pending = params->max_pending_docs ? params->max_pending_docs : 5000;
    ix->poll_ms = params->poll_interval_ms ? params->poll_interval_ms : 1000;
    cl_dbjob_params_t jp = {
        .db = params->db,
        .interval_ms = ix->poll_ms,
        .handlers = {.run = on_job_run},
        .arg = ix,
    };
    if (cl_dbjob_new(loop, &jp, &ix->job, err) != CL_OK) {
        free(ix);
        return CL_ERR;
    }
    ix->index = cl_xstrdup(params->index);
    ix->state = IX_UNPREPARED;
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
    if (!closing(ix))
        ix->state = IX_UNPREPARED;
}

void cl_indexer_stats(const cl_indexer_t *ix, cl_indexer_stats_t *out)
{
    cl_dbjob_stats_t js;
    cl_dbjob_stats(ix->job, &js);
    *out = ix->stats;
    out->ticks_skipped = js.ticks_skipped;
    out->index_ready = ix->state != IX_UNPREPARED && !closing(ix);
}

static void on_index_ready(void *arg, int status, const char *message)
{
    ensure_t *e = arg;
    cl_indexer_t *ix = e->ix;
    bool current = e->sink_generation == ix->sink_generation;
    free(e);
    /* A replaced sink answers its pending setup with CL_ERR_RETRY when it
     * closes: not a problem of the index. */
    if (closing(ix) || !current)
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
    /* A walk begun on a previous sink is not continued: the next starts
     * from the first key once that sink's documents are accounted for. */
    ix->state = IX_AT_END;
    run_soon(ix);
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
    return cl_dbjob_start(ix->job, err);
}

void cl_indexer_kick(cl_indexer_t *ix)
{
    if (!closing(ix))
        run_soon(ix);
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
    if (closing(ix))
        maybe_finish_close(ix);
    else if (ix->state == IX_FIRST_PAGE || ix->state == IX_NEXT_PAGE)
        run_soon(ix); /* the walk goes on if it was waiting for room */
}

static void run_update(cl_indexer_t *ix, query_t *q)
{
    static const cl_db_query_handlers_t h = {.row = NULL, .done = on_update_done};
    char err[CL_ERR_LEN];
    ix->updates_in_flight++;
    if (cl_dbjob_query(ix->job, q->sql.data, q->sql.len, &h, q, err) != CL_OK) {
        ix->updates_in_flight--;
        cl_log_warn("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
    }
}

static void flush_acks(cl_indexer_t *ix)
{
    ix->last_flush_ms = cl_now_ms();
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
        if (ix->ack_count >= CL_INDEXER_ACK_BATCH && !closing(ix))
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
    if (closing(ix))
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
    if (ix->state == IX_FIRST_PAGE)
        ix->state = IX_NEXT_PAGE;

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
    size_t rows = ix->page_count;
    /* The sink may have been taken away (shutdown) or replaced by one whose
     * index is not prepared yet (reload) while the SELECT ran: then the page
     * is dropped. Its rows keep needs_index = 1, and the walk starts over
     * from the first key once nothing is outstanding, so they are read again. */
    bool drop = closing(ix) || ix->sink == NULL || ix->state == IX_UNPREPARED;
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
    if (closing(ix)) {
        cl_dbjob_run_end(ix->job);
        maybe_finish_close(ix);
        return;
    }
    bool more = false;
    if (r->status != CL_OK) {
        /* The next run tries again from the same cursor. */
        cl_log_warn("indexer", "reading aggregates to index failed: %s; trying again", r->message);
    } else if (drop) {
        cl_log_debug("indexer", "page of %zu row(s) dropped: no sink ready for it", rows);
    } else {
        cl_log_debug("indexer", "page of %zu row(s) read, %zu document(s) outstanding", rows,
                     ix->docs_outstanding);
        if (rows < ix->page_rows)
            ix->state = IX_AT_END;
        if (cl_now_ms() - ix->last_flush_ms >= ix->poll_ms)
            flush_acks(ix);
        more = fetch_page(ix, false);
    }
    if (!more)
        cl_dbjob_run_end(ix->job);
}

/* Issue the next page's SELECT within the run in progress; false when there
 * is none to fetch now. may_restart: allowed to start a new walk from the
 * first key. Only ticks and kicks may, so an idle indexer reads once per
 * tick, not in a loop. */
static bool fetch_page(cl_indexer_t *ix, bool may_restart)
{
    if (ix->state == IX_UNPREPARED || closing(ix) || ix->sink == NULL)
        return false;
    if (cl_es_sink_pending(ix->sink) >= ix->max_pending)
        return false;
    if (ix->state == IX_AT_END) {
        /* Start over only when nothing is on its way, so no row is fetched
         * again while its document or acknowledgement is in flight. */
        if (!may_restart || ix->docs_outstanding > 0 || ix->ack_count > 0 ||
            ix->updates_in_flight > 0)
            return false;
        ix->state = IX_FIRST_PAGE;
    }
    query_t *q = cl_xcalloc(1, sizeof *q);
    q->ix = ix;
    cl_buf_init(&q->sql);
    char err[CL_ERR_LEN];
    if (cl_aggregate_index_select_sql(
            &q->sql, ix->page_rows, ix->state == IX_NEXT_PAGE ? &ix->cursor : NULL, err) != CL_OK) {
        cl_log_error("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
        return false;
    }
    ix->page = cl_xrealloc(ix->page, ix->page_rows * sizeof *ix->page);
    ix->page_count = 0;
    static const cl_db_query_handlers_t h = {.row = on_row, .done = on_select_done};
    if (cl_dbjob_query(ix->job, q->sql.data, q->sql.len, &h, q, err) != CL_OK) {
        cl_log_warn("indexer", "%s", err);
        cl_buf_free(&q->sql);
        free(q);
        return false;
    }
    return true;
}

/* ---- close --------------------------------------------------------------- */

static void on_job_closed(void *arg)
{
    cl_indexer_t *ix = arg;
    cl_close_cb cb = ix->close_cb;
    void *cb_arg = ix->close_arg;
    free(ix->acks);
    free(ix->page);
    free(ix->index);
    free(ix);
    if (cb != NULL)
        cb(cb_arg);
}

static void maybe_finish_close(cl_indexer_t *ix)
{
    if (ix->state != IX_DRAINING || fetching(ix) || ix->updates_in_flight > 0 ||
        ix->docs_outstanding > 0)
        return;
    ix->state = IX_CLOSING_JOB;
    if (cl_dbjob_close(ix->job, on_job_closed, ix) != CL_OK)
        cl_panic("indexer: its job was closed by someone else");
}

int cl_indexer_close(cl_indexer_t *ix, cl_close_cb cb, void *arg)
{
    if (closing(ix))
        return CL_ERR;
    ix->close_cb = cb;
    ix->close_arg = arg;
    flush_acks(ix);
    ix->state = IX_DRAINING;
    maybe_finish_close(ix);
    return CL_OK;
}

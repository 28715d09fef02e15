/* Fakes of the store and the Kafka source for the pipeline's loop tests; see
 * fake_ingest.h. */
#include "fake_ingest.h"

#include <stdio.h>
#include <string.h>

#include "clickloop/common.h"

static void copy_text(char *to, size_t size, const char *from)
{
    snprintf(to, size, "%s", from != NULL ? from : "");
}

/* ---- Store --------------------------------------------------------------- */

cl_store_t *fake_store_new(void)
{
    cl_store_t *s = cl_xcalloc(1, sizeof *s);
    s->max_batch_sql_bytes = 16u * 1024u * 1024u;
    return s;
}

size_t fake_store_pending(const cl_store_t *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->write_count; i++)
        n += !s->writes[i].completed;
    return n;
}

int fake_store_complete(cl_store_t *s, size_t index, int status, const char *message)
{
    if (index >= s->write_count || s->writes[index].completed)
        return CL_ERR;
    fake_write_t *w = &s->writes[index];
    w->completed = true;
    cl_store_batch_result_t result = {
        .status = status,
        .error_class = status == CL_ERR ? CL_DB_ERROR_DATA : CL_DB_ERROR_TRANSIENT,
        .error_code = status == CL_OK ? 0 : 1366,
        .message = status == CL_OK ? "" : message,
        .rows_affected = status == CL_OK ? w->n_rows + w->n_rejected : 0,
        .attempts = 1,
    };
    w->cb(w->arg, &result);
    return CL_OK;
}

int cl_store_write_batch(cl_store_t *s, const cl_store_row_t *rows, size_t n_rows,
                         const cl_store_rejected_t *rejected, size_t n_rejected,
                         cl_store_batch_cb cb, void *arg, char err[CL_ERR_LEN])
{
    if (s->refuse_writes)
        return cl_errorf(err, "the store is closing");
    if (s->write_count == FAKE_MAX_WRITES || n_rows > FAKE_MAX_ITEMS || n_rejected > FAKE_MAX_ITEMS)
        cl_panic("fake store: a write of %zu rows and %zu rejected events is past its capacity",
                 n_rows, n_rejected);
    fake_write_t *w = &s->writes[s->write_count++];
    memset(w, 0, sizeof *w);
    w->cb = cb;
    w->arg = arg;
    w->n_rows = n_rows;
    w->n_rejected = n_rejected;
    w->submitted_ms = cl_now_ms();
    for (size_t i = 0; i < n_rows; i++) {
        copy_text(w->rows[i].topic, sizeof w->rows[i].topic, rows[i].topic);
        w->rows[i].partition = rows[i].partition;
        w->rows[i].offset = rows[i].offset;
    }
    for (size_t i = 0; i < n_rejected; i++) {
        copy_text(w->rejected[i].topic, sizeof w->rejected[i].topic, rejected[i].topic);
        w->rejected[i].partition = rejected[i].partition;
        w->rejected[i].offset = rejected[i].offset;
        copy_text(w->reason[i], sizeof w->reason[i], rejected[i].reason);
        w->payload_len[i] = rejected[i].payload_len;
    }
    return CL_OK;
}

size_t cl_store_max_batch_sql_bytes(const cl_store_t *s)
{
    return s->max_batch_sql_bytes;
}

size_t cl_store_row_sql_bytes(const cl_store_row_t *row)
{
    CL_UNUSED(row);
    return FAKE_ROW_SQL_BYTES;
}

size_t cl_store_rejected_sql_bytes(const cl_store_rejected_t *rejected)
{
    return FAKE_REJECTED_SQL_BYTES + 2 * rejected->payload_len;
}

/* ---- Kafka source -------------------------------------------------------- */

void cl_kafka_source_store_offset(cl_kafka_source_t *src, const char *topic, int32_t partition,
                                  int64_t next_offset)
{
    if (src->stored_count == FAKE_MAX_STORED_OFFSETS)
        cl_panic("fake source: more than %d offsets stored", FAKE_MAX_STORED_OFFSETS);
    fake_stored_offset_t *o = &src->stored[src->stored_count++];
    copy_text(o->topic, sizeof o->topic, topic);
    o->partition = partition;
    o->next_offset = next_offset;
}

void cl_kafka_source_set_paused(cl_kafka_source_t *src, bool paused)
{
    if (paused)
        src->pause_calls++;
    else
        src->resume_calls++;
    src->paused = paused;
}

bool cl_kafka_source_paused(const cl_kafka_source_t *src)
{
    return src->paused;
}

/* ---- librdkafka ---------------------------------------------------------- */

/* Messages are made by hand (test_pipeline.c), so their topic is too. */
const char *rd_kafka_topic_name(const rd_kafka_topic_t *rkt)
{
    return rkt->name;
}

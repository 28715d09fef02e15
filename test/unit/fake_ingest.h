/* Link-time fakes of the store and the Kafka source, for loop tests of the
 * pipeline (test_pipeline.c).
 *
 * fake_ingest.c defines the cl_store_* and cl_kafka_source_* functions that
 * pipeline.c calls (and librdkafka's rd_kafka_topic_name, for hand-made
 * messages), so a test program linked with it instead of store.c and
 * kafka_source.c needs no server: the store records every write and completes
 * it only when the test says so, with the result the test chooses; the source
 * records its paused state and every offset stored. A function the pipeline
 * starts to call that is missing here fails the link, which is the point: the
 * fakes must say what the real modules would do.
 *
 * The structures are complete here (they are opaque to the pipeline), so a
 * test embeds them and reads their fields directly. */
#ifndef CLICKLOOP_TEST_FAKE_INGEST_H
#define CLICKLOOP_TEST_FAKE_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clickloop/kafka_source.h"
#include "clickloop/store.h"

/* Capacities of the records below; a test that needs more is too large. */
#define FAKE_MAX_WRITES 64
#define FAKE_MAX_ITEMS 64
#define FAKE_MAX_STORED_OFFSETS 64
#define FAKE_REASON_LEN 256

/* What cl_store_row_sql_bytes and cl_store_rejected_sql_bytes answer: every
 * row costs the same, a rejected event its payload twice (escaping) on top, so
 * tests can size a batch's SQL budget exactly. */
#define FAKE_ROW_SQL_BYTES 1000u
#define FAKE_REJECTED_SQL_BYTES 500u

/* The Kafka coordinates of one item of a write, copied at submission (the
 * store may not keep pointers into the caller's rows, store.h). */
typedef struct {
    char topic[64];
    int32_t partition;
    int64_t offset;
} fake_item_t;

typedef struct {
    cl_store_batch_cb cb;
    void *arg;
    size_t n_rows, n_rejected;
    fake_item_t rows[FAKE_MAX_ITEMS];
    fake_item_t rejected[FAKE_MAX_ITEMS];
    char reason[FAKE_MAX_ITEMS][FAKE_REASON_LEN]; /* of each rejected event */
    size_t payload_len[FAKE_MAX_ITEMS];           /* of each rejected event */
    uint64_t submitted_ms;                        /* cl_now_ms() at submission */
    bool completed;
} fake_write_t;

struct cl_store_s {
    /* cl_store_max_batch_sql_bytes() */
    size_t max_batch_sql_bytes;
    /* cl_store_write_batch() fails at once, as when the store is closing. */
    bool refuse_writes;
    size_t write_count; /* accepted writes, in the order of submission */
    fake_write_t writes[FAKE_MAX_WRITES];
};

/* A store with a 16 MiB SQL budget and no write. Free with free(). */
cl_store_t *fake_store_new(void);

/* Writes accepted and not completed yet. */
size_t fake_store_pending(const cl_store_t *store);

/* Complete write `index` (0-based, in submission order) with `status`: CL_OK
 * (committed), CL_ERR (refused for its data, with `message`) or CL_ERR_RETRY
 * (cancelled by a close of the store). Runs the pipeline's callback now, as
 * the store would from the loop, and returns CL_OK; returns CL_ERR without
 * calling anything when that write does not exist or already completed. */
int fake_store_complete(cl_store_t *store, size_t index, int status, const char *message);

typedef struct {
    char topic[64];
    int32_t partition;
    int64_t next_offset;
} fake_stored_offset_t;

struct cl_kafka_source_s {
    bool paused;
    unsigned pause_calls, resume_calls; /* cl_kafka_source_set_paused(true / false) */
    size_t stored_count;
    fake_stored_offset_t stored[FAKE_MAX_STORED_OFFSETS];
};

/* The librdkafka topic of a hand-made message: rd_kafka_topic_name() returns
 * `name`. */
struct rd_kafka_topic_s {
    const char *name;
};

#endif

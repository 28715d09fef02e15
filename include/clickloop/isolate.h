/* isolate: finding the events that MariaDB refuses inside a batch, so that
 * one bad value never holds the others back. Pure arithmetic; the pipeline
 * drives it (pipeline.c) and the unit tests simulate it.
 *
 * The items of a batch are its rows (valid events) followed by its rejected
 * events, numbered 0..n-1. A write of a range of items that fails with an
 * error of the data (CL_DB_ERROR_DATA: one transaction, so nothing of it was
 * stored) is split into halves, both written again; a range of one item that
 * still fails is the culprit. With k culprits among n items that costs at
 * most 1 + 2k·ceil(log2 n) writes, and every other item is stored by exactly
 * one successful write. */
#ifndef CLICKLOOP_ISOLATE_H
#define CLICKLOOP_ISOLATE_H

#include <stddef.h>

/* Items first .. first + count - 1 of a batch. */
typedef struct cl_isolate_range_s {
    size_t first;
    size_t count;
} cl_isolate_range_t;

/* A write of `failed` was refused for its data: fill halves[0] and halves[1]
 * (the first half is the smaller one when count is odd) and return 2, or
 * return 0 when it holds a single item (or none): that item is refused. */
size_t cl_isolate_split(cl_isolate_range_t failed, cl_isolate_range_t halves[2]);

/* The rows and rejected events a range of items covers, for a batch of
 * `row_count` rows: rows [*row_first, *row_first + *rows) and rejected
 * events [*rejected_first, *rejected_first + *rejected). */
void cl_isolate_items(cl_isolate_range_t range, size_t row_count, size_t *row_first, size_t *rows,
                      size_t *rejected_first, size_t *rejected);

#endif

/* Poison isolation by halving; see include/clickloop/isolate.h. */
#include "clickloop/isolate.h"

size_t cl_isolate_split(cl_isolate_range_t failed, cl_isolate_range_t halves[2])
{
    if (failed.count < 2)
        return 0;
    size_t first_half = failed.count / 2;
    halves[0] = (cl_isolate_range_t){failed.first, first_half};
    halves[1] = (cl_isolate_range_t){failed.first + first_half, failed.count - first_half};
    return 2;
}

void cl_isolate_items(cl_isolate_range_t range, size_t row_count, size_t *row_first, size_t *rows,
                      size_t *rejected_first, size_t *rejected)
{
    size_t end = range.first + range.count;
    size_t rows_end = end < row_count ? end : row_count;
    *row_first = range.first < row_count ? range.first : row_count;
    *rows = rows_end - *row_first;
    *rejected_first = (range.first > row_count ? range.first : row_count) - row_count;
    *rejected = end > row_count ? end - row_count - *rejected_first : 0;
}

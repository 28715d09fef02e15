/* Offset tracking: which Kafka offsets may be committed.
 *
 * A partition's messages are spread over batches that commit to MariaDB in any
 * order (several connections). Each batch holds one segment per partition it
 * touched: the run of that partition's messages that arrived while the batch
 * was open, so segments of one partition are ordered like the messages. The
 * committable offset of a partition advances only over the contiguous prefix of
 * done segments: never past the first offset still in flight.
 *
 * Pure logic, no librdkafka: the caller stores the returned offsets.
 *
 * Ownership: segments are allocated here; a segment is freed once it is both
 * done (its batch finished) and detached from its partition (popped from the
 * head, or the partition was revoked). */
#ifndef CLICKLOOP_OFFSETS_H
#define CLICKLOOP_OFFSETS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cl_offsets_s cl_offsets_t;
typedef struct cl_offsets_part_s cl_offsets_part_t;
typedef struct cl_offsets_segment_s cl_offsets_segment_t;

cl_offsets_t *cl_offsets_new(void);
/* Frees every partition; segments still held by batches are detached and are
 * freed by their cl_offsets_segment_done(). */
void cl_offsets_free(cl_offsets_t *o);

/* The state for a partition, created when missing (on assignment or on the
 * first message). Returns the same pointer until the partition is revoked. */
cl_offsets_part_t *cl_offsets_part(cl_offsets_t *o, const char *topic, int32_t partition);
/* Look up without creating; NULL when not tracked. */
cl_offsets_part_t *cl_offsets_find(cl_offsets_t *o, const char *topic, int32_t partition);
/* The partition was revoked or lost: forget it. Work still in flight for it is
 * abandoned (its completion advances nothing), so the new owner re-reads it. */
void cl_offsets_revoke(cl_offsets_t *o, const char *topic, int32_t partition);

const char *cl_offsets_part_topic(const cl_offsets_part_t *p);
int32_t cl_offsets_part_partition(const cl_offsets_part_t *p);

/* Start a new segment at the tail of the partition, holding `offset`. */
cl_offsets_segment_t *cl_offsets_segment_open(cl_offsets_part_t *p, int64_t offset);
/* Add a later offset of the same partition to the segment (it must be the
 * partition's tail segment). */
void cl_offsets_segment_extend(cl_offsets_segment_t *s, int64_t offset);
/* The partition this segment belongs to, NULL once detached by a revoke. */
cl_offsets_part_t *cl_offsets_segment_part(const cl_offsets_segment_t *s);
/* The first offset the segment holds. */
int64_t cl_offsets_segment_first(const cl_offsets_segment_t *s);

/* The segment's messages were not written and will not be (a batch cancelled
 * by a close, or refused when submitted): it stays in its partition as a
 * segment never done, so no later segment of the partition commits past it;
 * the messages are consumed again after the partition's next assignment.
 * The segment is the tracker's from now on (freed with its partition). */
void cl_offsets_segment_abandon(cl_offsets_segment_t *s);

/* The segment's batch is durably stored. If that lets the partition's
 * committable offset advance, returns true and sets *commit_offset to the next
 * offset to consume (last done offset + 1) and *part to the partition. The
 * segment must not be used afterwards. */
bool cl_offsets_segment_done(cl_offsets_segment_t *s, cl_offsets_part_t **part,
                             int64_t *commit_offset);

#endif

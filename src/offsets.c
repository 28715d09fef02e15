/* Offset tracking per partition; see include/clickloop/offsets.h. */
#include "clickloop/offsets.h"

#include <stdlib.h>
#include <string.h>

#include "clickloop/common.h"

struct cl_offsets_segment_s {
    cl_offsets_part_t *part; /* NULL once detached by a revoke */
    cl_offsets_segment_t *next;
    int64_t first;
    int64_t last;
    bool done;
    bool abandoned; /* its messages were not written: it stays, unfinished */
};

struct cl_offsets_part_s {
    cl_offsets_part_t *next; /* in cl_offsets_t's list */
    char *topic;
    int32_t partition;
    cl_offsets_segment_t *head;
    cl_offsets_segment_t *tail;
};

/* Partitions per instance are few (tens, rarely thousands): a list with a
 * one-entry cache of the last lookup is enough, since consecutive messages
 * mostly come from the same partition. */
struct cl_offsets_s {
    cl_offsets_part_t *parts;
    cl_offsets_part_t *last;
};

cl_offsets_t *cl_offsets_new(void)
{
    return cl_xcalloc(1, sizeof(cl_offsets_t));
}

static void part_detach_all(cl_offsets_part_t *p)
{
    cl_offsets_segment_t *s = p->head;
    while (s != NULL) {
        cl_offsets_segment_t *next = s->next;
        s->part = NULL;
        s->next = NULL;
        if (s->done || s->abandoned)
            free(s); /* no batch holds it any more */
        s = next;
    }
    p->head = p->tail = NULL;
}

static void part_free(cl_offsets_part_t *p)
{
    part_detach_all(p);
    free(p->topic);
    free(p);
}

/* Forget every partition. */
static void revoke_all(cl_offsets_t *o)
{
    while (o->parts != NULL) {
        cl_offsets_part_t *p = o->parts;
        o->parts = p->next;
        part_free(p);
    }
    o->last = NULL;
}

void cl_offsets_free(cl_offsets_t *o)
{
    if (o == NULL)
        return;
    revoke_all(o);
    free(o);
}

cl_offsets_part_t *cl_offsets_find(cl_offsets_t *o, const char *topic, int32_t partition)
{
    if (o->last != NULL && o->last->partition == partition && strcmp(o->last->topic, topic) == 0)
        return o->last;
    for (cl_offsets_part_t *p = o->parts; p != NULL; p = p->next) {
        if (p->partition == partition && strcmp(p->topic, topic) == 0) {
            o->last = p;
            return p;
        }
    }
    return NULL;
}

cl_offsets_part_t *cl_offsets_part(cl_offsets_t *o, const char *topic, int32_t partition)
{
    cl_offsets_part_t *p = cl_offsets_find(o, topic, partition);
    if (p != NULL)
        return p;
    p = cl_xcalloc(1, sizeof *p);
    p->topic = cl_xstrdup(topic);
    p->partition = partition;
    p->next = o->parts;
    o->parts = p;
    o->last = p;
    return p;
}

void cl_offsets_revoke(cl_offsets_t *o, const char *topic, int32_t partition)
{
    for (cl_offsets_part_t **pp = &o->parts; *pp != NULL; pp = &(*pp)->next) {
        cl_offsets_part_t *p = *pp;
        if (p->partition == partition && strcmp(p->topic, topic) == 0) {
            *pp = p->next;
            if (o->last == p)
                o->last = NULL;
            part_free(p);
            return;
        }
    }
}

const char *cl_offsets_part_topic(const cl_offsets_part_t *p)
{
    return p->topic;
}
int32_t cl_offsets_part_partition(const cl_offsets_part_t *p)
{
    return p->partition;
}

cl_offsets_segment_t *cl_offsets_segment_open(cl_offsets_part_t *p, int64_t offset)
{
    cl_offsets_segment_t *s = cl_xcalloc(1, sizeof *s);
    s->part = p;
    s->first = s->last = offset;
    if (p->tail != NULL)
        p->tail->next = s;
    else
        p->head = s;
    p->tail = s;
    return s;
}

void cl_offsets_segment_extend(cl_offsets_segment_t *s, int64_t offset)
{
    if (offset > s->last)
        s->last = offset;
}

cl_offsets_part_t *cl_offsets_segment_part(const cl_offsets_segment_t *s)
{
    return s->part;
}

int64_t cl_offsets_segment_first(const cl_offsets_segment_t *s)
{
    return s->first;
}

void cl_offsets_segment_abandon(cl_offsets_segment_t *s)
{
    if (s->part == NULL) {
        free(s); /* revoked meanwhile */
        return;
    }
    s->abandoned = true;
}

bool cl_offsets_segment_done(cl_offsets_segment_t *s, cl_offsets_part_t **part,
                             int64_t *commit_offset)
{
    cl_offsets_part_t *p = s->part;
    s->done = true;
    if (p == NULL) {
        free(s); /* revoked while in flight: abandoned */
        return false;
    }
    bool advanced = false;
    while (p->head != NULL && p->head->done) {
        cl_offsets_segment_t *h = p->head;
        *commit_offset = h->last + 1;
        advanced = true;
        p->head = h->next;
        if (p->head == NULL)
            p->tail = NULL;
        free(h);
    }
    if (advanced && part != NULL)
        *part = p;
    return advanced;
}

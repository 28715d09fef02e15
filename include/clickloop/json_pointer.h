/* JSON Pointers (RFC 6901), compiled once and resolved many times.
 *
 * The event mapping names each field by a pointer such as "/click_data/url".
 * json-c 0.16 has json_pointer_get(), but it copies and unescapes the pointer
 * text on every call; on the ingest hot path we unescape once, at
 * configuration time, and resolution is then a hash lookup per token. */
#ifndef CLICKLOOP_JSON_POINTER_H
#define CLICKLOOP_JSON_POINTER_H

#include <stdbool.h>
#include <stddef.h>

#include "clickloop/common.h"

struct json_object;

typedef struct cl_json_pointer_s cl_json_pointer_t;

/* Check the syntax of RFC 6901 pointer `p`: the empty string (the whole
 * document) or a sequence of "/token", where '~' appears only as "~0" (a
 * literal '~') or "~1" (a literal '/'). Returns 0 or CL_ERR with a sentence
 * in err naming the offending byte. */
int cl_json_pointer_validate(const char *p, char err[CL_ERR_LEN]);

/* Validate and compile `p`. On success *out is owned by the caller, who frees
 * it with cl_json_pointer_free(). */
int cl_json_pointer_compile(const char *p, cl_json_pointer_t **out, char err[CL_ERR_LEN]);
void cl_json_pointer_free(cl_json_pointer_t *ptr);

/* The pointer as written, for messages. */
const char *cl_json_pointer_text(const cl_json_pointer_t *ptr);

/* Find the value `ptr` names inside `root`. Returns true and sets *value when
 * the member or element exists; *value is then NULL for a JSON null, as json-c
 * represents null. Returns false when it does not exist: a missing member, an
 * index past the end of an array, a token that is not a canonical array index
 * ("01", "-", "x") applied to an array, or a token applied to a scalar. */
bool cl_json_pointer_resolve(const cl_json_pointer_t *ptr, struct json_object *root,
                             struct json_object **value);

#endif

/* curl_uv: libcurl's multi interface driven by a libuv loop, never blocking
 * it. The Elasticsearch sink (es_sink.h) is its user; it knows nothing of
 * Elasticsearch.
 *
 * The caller builds an easy handle with the options of its request and adds
 * it with a completion callback; the glue watches the sockets libcurl asks
 * for (one uv_poll per socket) and runs libcurl's timeout (one uv_timer), and
 * calls the completion callback once per transfer that ends, whatever its
 * result. The glue uses the easy handle's CURLOPT_PRIVATE: callers keep their
 * own context in the callback's argument instead.
 *
 * The caller owns its easy handles: it creates them and cleans them up (in
 * the completion callback, or after cl_curl_uv_abort).
 *
 * The process calls curl_global_init(CURL_GLOBAL_DEFAULT) before creating one
 * and curl_global_cleanup() after the loop has closed (main's job). */
#ifndef CLICKLOOP_CURL_UV_H
#define CLICKLOOP_CURL_UV_H

#include <curl/curl.h>
#include <uv.h>

#include "clickloop/common.h"

typedef struct cl_curl_uv_s cl_curl_uv_t;

/* A transfer ended: `result` is CURLE_OK when a complete HTTP answer arrived
 * (whatever its status; read it with curl_easy_getinfo). The handle is no
 * longer part of the multi handle when this runs: the callback may clean it
 * up, add other transfers, abort others, or close the glue. */
typedef void (*cl_curl_uv_done_cb)(CURL *easy, CURLcode result, void *arg);

/* Create the multi handle and its timer on `loop`. Fails (with a sentence in
 * err) when libcurl cannot create a multi handle, or when it was built
 * without an asynchronous resolver: every name lookup would then block the
 * loop for as long as DNS takes. */
int cl_curl_uv_new(uv_loop_t *loop, cl_curl_uv_t **out, char err[CL_ERR_LEN]);

/* Start `easy`; `done` runs once, from the loop, when it ends. Only out of
 * memory can make libcurl refuse a new, valid handle: that aborts. */
void cl_curl_uv_add(cl_curl_uv_t *cu, CURL *easy, cl_curl_uv_done_cb done, void *arg);

/* Stop a transfer that was added and has not ended; its callback never runs.
 * The handle stays the caller's. */
void cl_curl_uv_abort(cl_curl_uv_t *cu, CURL *easy);

/* Close: transfers still running are aborted as by cl_curl_uv_abort (their
 * handles stay the caller's, their callbacks never run), libcurl's cached
 * connections are closed, then the poll and timer handles; cb runs once they
 * are closed and the glue is freed. Must not be called twice. */
void cl_curl_uv_close(cl_curl_uv_t *cu, cl_close_cb cb, void *arg);

#endif

/* es_bulk: NDJSON framing, answer classification and retry policy of the
 * `_bulk` protocol; see include/clickloop/es_bulk.h. Pure: no I/O. */
#include "clickloop/es_bulk.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/utf8.h"

/* Longest excerpt of a non-JSON error body quoted in a reason. */
#define BODY_EXCERPT_LEN 200
/* Longest per-item reason kept: reasons quote field values, which may be
 * several KB of URL. */
#define ITEM_REASON_MAX 1024

/* ---- JSON text ------------------------------------------------------------------------------ */

void cl_es_json_append_string(cl_buf_t *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    cl_buf_reserve(out, len + 2);
    cl_buf_append_char(out, '"');
    size_t run = 0; /* bytes copied verbatim since the last escape */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char uesc[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            uesc[0] = '\\';
            uesc[1] = 'u';
            uesc[2] = '0';
            uesc[3] = '0';
            uesc[4] = hex[c >> 4];
            uesc[5] = hex[c & 0xf];
            uesc[6] = '\0';
            esc = uesc;
        }
        if (esc == NULL) {
            run++;
            continue;
        }
        cl_buf_append(out, s + i - run, run);
        run = 0;
        cl_buf_append_str(out, esc);
    }
    cl_buf_append(out, s + len - run, run);
    cl_buf_append_char(out, '"');
}

/* ---- Building ------------------------------------------------------------------------------- */

void cl_es_bulk_init(cl_es_bulk_t *bulk, size_t max_docs, size_t max_bytes)
{
    cl_buf_init(&bulk->body);
    bulk->docs = 0;
    bulk->max_docs = max_docs;
    bulk->max_bytes = max_bytes;
}

/* Copy a source, writing CR and LF as spaces: in valid JSON they can only be
 * insignificant whitespace (raw control characters are not allowed inside
 * strings), and one raw newline would end the line early and shift every
 * following action/source pair. */
static void append_source_line(cl_buf_t *out, const char *src, size_t len)
{
    cl_buf_reserve(out, len + 1);
    char *dst = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        dst[i] = c == '\n' || c == '\r' ? ' ' : c;
    }
    out->len += len;
    cl_buf_append_char(out, '\n');
}

bool cl_es_bulk_add(cl_es_bulk_t *bulk, const cl_es_bulk_doc_t *doc)
{
    if (bulk->docs > 0 && bulk->max_docs > 0 && bulk->docs >= bulk->max_docs)
        return false;
    size_t before = bulk->body.len;
    cl_buf_t *b = &bulk->body;
    cl_buf_append_str(b, "{\"index\":{\"_index\":");
    cl_es_json_append_string(b, doc->index, doc->index_len);
    cl_buf_append_str(b, ",\"_id\":");
    cl_es_json_append_string(b, doc->id, doc->id_len);
    if (doc->version > 0)
        cl_buf_appendf(b, ",\"version\":%llu,\"version_type\":\"external_gte\"",
                       (unsigned long long)doc->version);
    cl_buf_append_str(b, "}}\n");
    append_source_line(b, doc->source, doc->source_len);
    if (bulk->docs > 0 && bulk->max_bytes > 0 && b->len > bulk->max_bytes) {
        b->len = before;
        b->data[before] = '\0';
        return false;
    }
    bulk->docs++;
    return true;
}

int cl_es_source_check(const char *source, size_t len, char err[CL_ERR_LEN])
{
    if (source == NULL || len == 0)
        return cl_errorf(err, "the source is empty; it must be one JSON object");
    if (len > INT32_MAX)
        return cl_errorf(err, "the source is %zu bytes long; at most %d are accepted", len,
                         INT32_MAX);
    size_t bad = 0;
    if (cl_utf8_validate(source, len, &bad) != CL_OK)
        return cl_errorf(err, "the source is not well-formed UTF-8 at byte %zu (%s)", bad,
                         cl_utf8_problem(source, len, bad));
    json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        cl_panic("out of memory creating a JSON tokener");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *obj = json_tokener_parse_ex(tok, source, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    int rc = CL_OK;
    if (obj == NULL || jerr != json_tokener_success) {
        /* json_tokener_continue: a truncated document. */
        rc = cl_errorf(err, "the source is not valid JSON at byte %zu: %s", used,
                       jerr == json_tokener_continue ? "unexpected end"
                                                     : json_tokener_error_desc(jerr));
    } else if (!json_object_is_type(obj, json_type_object)) {
        rc = cl_errorf(err, "the source is a JSON %s; it must be an object",
                       json_type_to_name(json_object_get_type(obj)));
    } else {
        for (size_t i = used; i < len; i++) {
            char c = source[i];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                rc = cl_errorf(err, "the source has text after its JSON object, at byte %zu", i);
                break;
            }
        }
    }
    json_object_put(obj);
    return rc;
}

/* ---- Classifying ---------------------------------------------------------------------------- */

/* Cut `text` to at most `max` bytes (max > 3), ending in "..." when cut, and
 * never inside a UTF-8 sequence: reasons end up in logs and JSON. */
static void truncate_text(cl_buf_t *text, size_t max)
{
    if (text->len <= max)
        return;
    size_t cut = max - 3;
    while (cut > 0 && ((unsigned char)text->data[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(text->data + cut, "...", 4);
    text->len = cut + 3;
}

static const char *object_string(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Parse `len` bytes as JSON; NULL when they are not. */
static json_object *parse_json(const char *body, size_t len)
{
    if (body == NULL || len == 0 || len > INT32_MAX)
        return NULL;
    json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        cl_panic("out of memory creating a JSON tokener");
    json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

/* "type: reason (caused by type: reason)" from an `error` object. */
static void describe_error(cl_buf_t *out, json_object *error)
{
    if (json_object_is_type(error, json_type_string)) {
        cl_buf_append_str(out, json_object_get_string(error));
        return;
    }
    const char *type = object_string(error, "type");
    const char *reason = object_string(error, "reason");
    cl_buf_appendf(out, "%s: %s", type ? type : "unknown_error", reason ? reason : "no reason");
    json_object *cause = NULL;
    if (json_object_object_get_ex(error, "caused_by", &cause) &&
        json_object_is_type(cause, json_type_object)) {
        const char *ctype = object_string(cause, "type");
        const char *creason = object_string(cause, "reason");
        cl_buf_appendf(out, " (caused by %s: %s)", ctype ? ctype : "unknown_error",
                       creason ? creason : "no reason");
    }
}

/* A printable excerpt of a body that is not an Elasticsearch error object
 * (a proxy's HTML page, a load balancer's message). */
static void describe_raw_body(cl_buf_t *out, const char *body, size_t len)
{
    if (body == NULL || len == 0) {
        cl_buf_append_str(out, "empty response body");
        return;
    }
    size_t n = len < BODY_EXCERPT_LEN ? len : BODY_EXCERPT_LEN;
    cl_buf_append_str(out, "response body \"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body[i];
        cl_buf_append_char(out, c < 0x20 || c == 0x7f ? ' ' : (char)c);
    }
    cl_buf_append_str(out, len > n ? "...\"" : "\"");
}

static bool status_needs_operator(long status)
{
    switch (status) {
    case 401: /* credentials */
    case 403: /* privileges */
    case 404: /* the URL's path does not lead to the cluster's API */
    case 405:
    case 407: /* proxy credentials */
        return true;
    default:
        return status < 400 || status >= 600;
    }
}

void cl_es_classify_response(long http_status, const char *body, size_t len,
                             cl_es_request_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->http_status = http_status;
    if (http_status >= 200 && http_status < 300) {
        out->outcome = CL_ES_REQUEST_OK;
        return;
    }
    if (http_status == 408 || http_status == 429) {
        out->outcome = CL_ES_REQUEST_RETRY;
    } else if (http_status >= 500 && http_status < 600) {
        out->outcome = CL_ES_REQUEST_RETRY;
        out->node_failed = true;
    } else if (status_needs_operator(http_status)) {
        out->outcome = CL_ES_REQUEST_RETRY;
        out->needs_operator = true;
    } else {
        out->outcome = CL_ES_REQUEST_REFUSED;
    }

    cl_buf_t text;
    cl_buf_init(&text);
    cl_buf_appendf(&text, "HTTP %ld: ", http_status);
    json_object *root = parse_json(body, len);
    json_object *error = NULL;
    if (root != NULL && json_object_is_type(root, json_type_object) &&
        json_object_object_get_ex(root, "error", &error) &&
        (json_object_is_type(error, json_type_object) ||
         json_object_is_type(error, json_type_string))) {
        describe_error(&text, error);
        const char *type = object_string(error, "type");
        if (type != NULL)
            snprintf(out->error_type, sizeof out->error_type, "%s", type);
    } else {
        describe_raw_body(&text, body, len);
    }
    json_object_put(root);
    truncate_text(&text, sizeof out->reason - 1);
    memcpy(out->reason, text.data, text.len + 1);
    cl_buf_free(&text);
}

static char *item_reason(int status, json_object *error)
{
    cl_buf_t text;
    cl_buf_init(&text);
    cl_buf_appendf(&text, "HTTP %d: ", status);
    if (error != NULL)
        describe_error(&text, error);
    else
        cl_buf_append_str(&text, "no error description");
    truncate_text(&text, ITEM_REASON_MAX);
    return cl_buf_steal(&text, NULL);
}

static cl_es_item_outcome_t item_outcome(int status, const char *error_type)
{
    if (status >= 200 && status < 300)
        return CL_ES_ITEM_OK;
    if (error_type != NULL && strcmp(error_type, "cluster_block_exception") == 0)
        return CL_ES_ITEM_RETRY; /* lifted by an operator or once disk is freed */
    if (status == 409 && error_type != NULL &&
        strcmp(error_type, "version_conflict_engine_exception") == 0)
        return CL_ES_ITEM_SUPERSEDED;
    if (status == 429 || status >= 500 || status == 401 || status == 403)
        return CL_ES_ITEM_RETRY;
    return CL_ES_ITEM_DROP;
}

/* Fill out->items from a 2xx body; false when the body cannot be trusted. */
static bool parse_items(const char *body, size_t len, size_t doc_count, cl_es_bulk_result_t *out,
                        char *why, size_t why_size)
{
    json_object *root = parse_json(body, len);
    json_object *items = NULL;
    bool ok = false;
    if (root == NULL || !json_object_is_type(root, json_type_object)) {
        snprintf(why, why_size, "the response body is not a JSON object");
        goto done;
    }
    if (!json_object_object_get_ex(root, "items", &items) ||
        !json_object_is_type(items, json_type_array)) {
        snprintf(why, why_size, "the response has no \"items\" array");
        goto done;
    }
    size_t n = json_object_array_length(items);
    if (n != doc_count) {
        snprintf(why, why_size, "the response has %zu items for %zu documents", n, doc_count);
        goto done;
    }
    out->items = cl_xcalloc(n, sizeof *out->items);
    out->item_count = n;
    for (size_t i = 0; i < n; i++) {
        /* {"index": {"status": 201, "error": {...}}}: one member, named after
         * the action. */
        json_object *wrapper = json_object_array_get_idx(items, i);
        json_object *item = NULL;
        if (json_object_is_type(wrapper, json_type_object)) {
            json_object_object_foreach(wrapper, action, value)
            {
                CL_UNUSED(action);
                item = value;
                break;
            }
        }
        json_object *status_obj = NULL;
        if (item == NULL || !json_object_object_get_ex(item, "status", &status_obj) ||
            !json_object_is_type(status_obj, json_type_int)) {
            snprintf(why, why_size, "item %zu of the response has no status", i);
            goto done;
        }
        int status = json_object_get_int(status_obj);
        json_object *error = NULL;
        if (!json_object_object_get_ex(item, "error", &error))
            error = NULL;
        cl_es_item_result_t *r = &out->items[i];
        r->status = status;
        r->outcome = item_outcome(status, error != NULL ? object_string(error, "type") : NULL);
        switch (r->outcome) {
        case CL_ES_ITEM_OK:
            out->ok++;
            break;
        case CL_ES_ITEM_SUPERSEDED:
            out->superseded++;
            break;
        case CL_ES_ITEM_RETRY:
            out->retry++;
            break;
        case CL_ES_ITEM_DROP:
            out->drop++;
            break;
        }
        if (r->outcome != CL_ES_ITEM_OK)
            r->reason = item_reason(status, error);
    }
    ok = true;
done:
    json_object_put(root);
    return ok;
}

static void free_items(cl_es_bulk_result_t *r)
{
    for (size_t i = 0; i < r->item_count; i++)
        free(r->items[i].reason);
    free(r->items);
    r->items = NULL;
    r->item_count = 0;
    r->ok = r->superseded = r->retry = r->drop = 0;
}

void cl_es_bulk_parse(long http_status, const char *body, size_t len, size_t doc_count,
                      cl_es_bulk_result_t *out)
{
    memset(out, 0, sizeof *out);
    cl_es_classify_response(http_status, body, len, &out->request);
    switch (out->request.outcome) {
    case CL_ES_REQUEST_RETRY:
        out->outcome = CL_ES_BULK_RETRY;
        return;
    case CL_ES_REQUEST_REFUSED:
        out->outcome = doc_count > 1 ? CL_ES_BULK_SPLIT : CL_ES_BULK_DROP;
        return;
    case CL_ES_REQUEST_OK:
        break;
    }
    char why[CL_ERR_LEN / 2];
    if (parse_items(body, len, doc_count, out, why, sizeof why)) {
        out->outcome = CL_ES_BULK_ITEMS;
        return;
    }
    /* Which documents were indexed is unknown: send them all again. */
    free_items(out);
    out->outcome = CL_ES_BULK_RETRY;
    out->request.outcome = CL_ES_REQUEST_RETRY;
    snprintf(out->request.reason, sizeof out->request.reason, "HTTP %ld: %s", http_status, why);
}

void cl_es_bulk_result_free(cl_es_bulk_result_t *result)
{
    free_items(result);
}

/* es_setup: index templates and mappings, as requests and verdicts; see
 * include/clickloop/es_setup.h. */
#include "clickloop/es_setup.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/es_doc.h"

/* Above the built-in templates (100 for logs-*-* and the like); Elastic
 * advises more than 500 for patterns that overlap them. */
#define TEMPLATE_PRIORITY 501

int cl_es_setup_init(cl_es_setup_t *setup, const char *index_pattern, const char *mappings_json,
                     char err[CL_ERR_LEN])
{
    char why[CL_ERR_LEN];
    memset(setup, 0, sizeof *setup);
    size_t len = index_pattern != NULL ? strlen(index_pattern) : 0;
    if (len == 0 || len > CL_ES_INDEX_MAX_LEN)
        return cl_errorf(err, "elasticsearch: the index name must be 1 to %d bytes",
                         CL_ES_INDEX_MAX_LEN);
    if (mappings_json == NULL ||
        cl_es_source_check(mappings_json, strlen(mappings_json), why) != CL_OK)
        return cl_errorf(err, "elasticsearch: the mappings for %.255s are invalid: %.200s",
                         index_pattern, mappings_json == NULL ? "missing" : why);
    if (cl_es_index_has_date(index_pattern)) {
        char name[CL_ES_INDEX_NAME_SIZE * 2], pattern[CL_ES_INDEX_NAME_SIZE];
        if (cl_es_index_template_name(index_pattern, name, sizeof name) < 0 ||
            cl_es_index_template_pattern(index_pattern, pattern, sizeof pattern) < 0)
            return cl_errorf(err, "elasticsearch: the index name %s is too long", index_pattern);
        setup->step = CL_ES_SETUP_TEMPLATE;
        setup->name = cl_xstrdup(name);
        setup->pattern = cl_xstrdup(pattern);
    } else {
        setup->step = CL_ES_SETUP_CREATE_INDEX;
        setup->name = cl_xstrdup(index_pattern);
    }
    setup->mappings = cl_xstrdup(mappings_json);
    return CL_OK;
}

void cl_es_setup_free(cl_es_setup_t *setup)
{
    free(setup->name);
    free(setup->pattern);
    free(setup->mappings);
    memset(setup, 0, sizeof *setup);
}

/* Percent-encode an index or template name for a URL path. */
static void append_path_segment(cl_buf_t *b, const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (plain) {
            cl_buf_append_char(b, (char)*p);
        } else {
            char esc[3] = {'%', hex[*p >> 4], hex[*p & 0xf]};
            cl_buf_append(b, esc, 3);
        }
    }
}

void cl_es_setup_request(const cl_es_setup_t *setup, cl_buf_t *path, cl_buf_t *body)
{
    cl_buf_append_char(path, '/');
    switch (setup->step) {
    case CL_ES_SETUP_TEMPLATE:
        cl_buf_append_str(path, "_index_template/");
        append_path_segment(path, setup->name);
        cl_buf_append_str(body, "{\"index_patterns\":[");
        cl_es_json_append_string(body, setup->pattern, strlen(setup->pattern));
        cl_buf_appendf(body, "],\"priority\":%d,\"template\":{\"mappings\":%s},", TEMPLATE_PRIORITY,
                       setup->mappings);
        cl_buf_append_str(body, "\"_meta\":{\"managed_by\":\"clickloop\"}}");
        break;
    case CL_ES_SETUP_CREATE_INDEX:
        append_path_segment(path, setup->name);
        cl_buf_appendf(body, "{\"mappings\":%s}", setup->mappings);
        break;
    case CL_ES_SETUP_UPDATE_MAPPING:
        append_path_segment(path, setup->name);
        cl_buf_append_str(path, "/_mapping");
        cl_buf_append_str(body, setup->mappings);
        break;
    }
}

void cl_es_setup_describe(const cl_es_setup_t *setup, char *out, size_t size)
{
    switch (setup->step) {
    case CL_ES_SETUP_TEMPLATE:
        snprintf(out, size, "index template %s", setup->name);
        break;
    case CL_ES_SETUP_CREATE_INDEX:
        snprintf(out, size, "create index %s", setup->name);
        break;
    case CL_ES_SETUP_UPDATE_MAPPING:
        snprintf(out, size, "mapping of index %s", setup->name);
        break;
    }
}

cl_es_setup_verdict_t cl_es_setup_answer(cl_es_setup_t *setup, const cl_es_request_result_t *r)
{
    if (setup->step == CL_ES_SETUP_CREATE_INDEX && r->outcome == CL_ES_REQUEST_REFUSED &&
        strcmp(r->error_type, "resource_already_exists_exception") == 0) {
        setup->step = CL_ES_SETUP_UPDATE_MAPPING;
        return CL_ES_SETUP_NEXT;
    }
    if (setup->step == CL_ES_SETUP_UPDATE_MAPPING && r->http_status == 404 &&
        strcmp(r->error_type, "index_not_found_exception") == 0) {
        setup->step = CL_ES_SETUP_CREATE_INDEX; /* deleted meanwhile */
        return CL_ES_SETUP_NEXT;
    }
    switch (r->outcome) {
    case CL_ES_REQUEST_OK:
        return CL_ES_SETUP_DONE;
    case CL_ES_REQUEST_REFUSED:
        return CL_ES_SETUP_REFUSED;
    case CL_ES_REQUEST_RETRY:
        return CL_ES_SETUP_RETRY;
    }
    cl_panic("es_setup: request outcome %d unknown", (int)r->outcome);
}

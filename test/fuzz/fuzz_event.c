/* libFuzzer target: the event parser (src/event.c) on arbitrary payloads,
 * through two field mappings: the default one ("/<field>") and the nested one
 * of docs/examples/nested-mapping.json, and a pointer taken from the input
 * (see LLVMFuzzerTestOneInput). Beyond "no crash, no leak, no UB"
 * (the sanitizers' job) it checks what event.h promises of an accepted event,
 * because store.h writes such an event to SQL without checking it again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/event.h"
#include "clickloop/utf8.h"

/* Small enough that libFuzzer's default -max_len explores the limit too. */
#define MAX_BYTES 4096

static cl_event_parser_t *parsers[2];

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_event: %s: %s\n", what, detail);
    abort();
}

/* A string field of an accepted event: NUL-terminated, well-formed UTF-8
 * without NUL, 1..max bytes (optional fields may be NULL). */
static void check_string(const char *name, const char *s, size_t len, size_t max, int required)
{
    if (s == NULL) {
        if (required)
            die(name, "required field missing");
        return;
    }
    if (len == 0 || len > max)
        die(name, "length out of range");
    if (memchr(s, '\0', len) != NULL || s[len] != '\0')
        die(name, "NUL inside, or not terminated");
    if (cl_utf8_validate(s, len, NULL) != 0)
        die(name, "ill-formed UTF-8");
}

static void check_event(const cl_event_t *ev)
{
    check_string("row_key", ev->row_key, ev->row_key_len, CL_EVENT_ROW_KEY_MAX_LEN, 1);
    if (ev->event_id != NULL)
        check_string("event_id", ev->event_id, strlen(ev->event_id), CL_EVENT_ID_MAX_LEN, 0);
    check_string("user_id", ev->user_id, ev->user_id ? strlen(ev->user_id) : 0,
                 CL_EVENT_USER_ID_MAX_LEN, 1);
    check_string("url", ev->url, ev->url_len, CL_EVENT_URL_MAX_LEN, 1);
    if (ev->ts_ms < CL_EVENT_TS_MIN_MS || ev->ts_ms > CL_DATETIME_MAX_MS)
        die("timestamp", "out of range");
    if (ev->country[0] != '\0' &&
        !(ev->country[0] >= 'A' && ev->country[0] <= 'Z' && ev->country[1] >= 'A' &&
          ev->country[1] <= 'Z' && ev->country[2] == '\0'))
        die("country", "not two upper-case letters");
    const struct {
        const char *name;
        const char *value;
        size_t max;
    } texts[] = {
        {"city", ev->city, CL_EVENT_TEXT_MAX_LEN},
        {"browser", ev->browser, CL_EVENT_TEXT_MAX_LEN},
        {"os", ev->os, CL_EVENT_TEXT_MAX_LEN},
        {"device", ev->device, CL_EVENT_TEXT_MAX_LEN},
        {"user_agent", ev->user_agent, CL_EVENT_USER_AGENT_MAX_LEN},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (texts[i].value != NULL)
            check_string(texts[i].name, texts[i].value, strlen(texts[i].value), texts[i].max, 0);
    }
    if (ev->time_spent_ms != -1 &&
        (ev->time_spent_ms < 0 || ev->time_spent_ms > CL_EVENT_TIME_SPENT_MAX_MS))
        die("time_spent_ms", "out of range");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The nested mapping of docs/examples/nested-mapping.json. */
    static const char *const nested[CL_FIELD_COUNT] = {
        [CL_FIELD_EVENT_ID] = "/event_id",
        [CL_FIELD_USER_ID] = "/click_data/user_id",
        [CL_FIELD_TIMESTAMP] = "/click_data/timestamp",
        [CL_FIELD_URL] = "/click_data/url",
        [CL_FIELD_COUNTRY] = "/geo_data/country",
        [CL_FIELD_CITY] = "/geo_data/city",
        [CL_FIELD_BROWSER] = "/user_agent_data/browser",
        [CL_FIELD_OS] = "/user_agent_data/os",
        [CL_FIELD_DEVICE] = "/user_agent_data/device",
        [CL_FIELD_USER_AGENT] = "/user_agent_data/user_agent",
        [CL_FIELD_TIME_SPENT_MS] = "/click_data/time_spent_ms",
    };
    char err[CL_ERR_LEN];
    if (cl_event_parser_new(NULL, MAX_BYTES, &parsers[0], err) != CL_OK ||
        cl_event_parser_new(nested, MAX_BYTES, &parsers[1], err) != CL_OK)
        die("parser", err);
    return 0;
}

static void parse_and_check(cl_event_parser_t *parser, const uint8_t *data, size_t size)
{
    cl_event_t ev;
    char reason[CL_ERR_LEN];
    int rc = cl_event_parse(parser, data, size, "fuzz.topic", 3, 42, &ev, reason);
    if (rc == CL_OK) {
        check_event(&ev);
        /* The time window with the widest bounds config.c allows (3 660 000 days, 10 000
         * years), around three arrival times. */
        const cl_event_time_window_t wide = {UINT64_C(316224000000000), UINT64_C(316224000000000)};
        const cl_event_time_window_t narrow = {1000, 0};
        const int64_t nows[] = {0, INT64_C(1764338400000), CL_DATETIME_MAX_MS};
        for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++) {
            if (cl_event_check_time_window(ev.ts_ms, nows[i], &wide, reason) != CL_OK)
                die("time window", "refused within 10 000 years");
            cl_event_check_time_window(ev.ts_ms, nows[i], &narrow, reason);
        }
    } else if (reason[0] == '\0' || memchr(reason, '\0', CL_ERR_LEN) == NULL) {
        die("reason", "a rejection without a terminated reason");
    }
    cl_event_clear(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An input "/<pointer>\n<payload>" also tries that pointer (from
     * ingest.mapping, which an operator writes) for the url and the user_id. */
    const uint8_t *nl = size > 0 && data[0] == '/' ? memchr(data, '\n', size) : NULL;
    if (nl != NULL) {
        size_t plen = (size_t)(nl - data);
        char *pointer = malloc(plen + 1);
        if (pointer == NULL)
            return 0;
        memcpy(pointer, data, plen);
        pointer[plen] = '\0';
        const char *pointers[CL_FIELD_COUNT] = {NULL};
        pointers[CL_FIELD_URL] = pointer;
        pointers[CL_FIELD_USER_ID] = pointer;
        cl_event_parser_t *custom = NULL;
        char err[CL_ERR_LEN];
        if (cl_event_parser_new(pointers, MAX_BYTES, &custom, err) == CL_OK) {
            parse_and_check(custom, nl + 1, size - plen - 1);
            cl_event_parser_free(custom);
        }
        free(pointer);
        return 0;
    }
    for (size_t i = 0; i < 2; i++)
        parse_and_check(parsers[i], data, size);
    return 0;
}

/* The fields of a clickstream event that clickloop understands. Shared by the
 * config module (which reads `ingest.mapping`, one JSON Pointer per field) and
 * the event module (which extracts them). The order is the order of
 * `cl_event_field_names`. */
#ifndef CLICKLOOP_EVENT_FIELDS_H
#define CLICKLOOP_EVENT_FIELDS_H

typedef enum {
    CL_FIELD_EVENT_ID = 0,
    CL_FIELD_USER_ID,
    CL_FIELD_TIMESTAMP,
    CL_FIELD_URL,
    CL_FIELD_COUNTRY,
    CL_FIELD_CITY,
    CL_FIELD_BROWSER,
    CL_FIELD_OS,
    CL_FIELD_DEVICE,
    CL_FIELD_USER_AGENT,
    CL_FIELD_TIME_SPENT_MS,
    CL_FIELD_COUNT
} cl_event_field_t;

/* Field names as they appear in configuration (`ingest.mapping.<name>`) and
 * in error messages, indexed by cl_event_field_t. */
#define CL_EVENT_FIELD_NAMES                                                                       \
    {                                                                                              \
        "event_id", "user_id", "timestamp", "url", "country", "city", "browser", "os", "device",   \
            "user_agent", "time_spent_ms"                                                          \
    }

#endif

/* libFuzzer target: configuration loading from text (src/config.c), with
 * `${ENV}` expansion through a fake environment. It includes config.c, as
 * test/unit/test_config.c does, to run the loader's own steps on a string
 * instead of a file (test/unit/config_load.h does the same).
 *
 * Checks beyond the sanitizers': a load either succeeds with no message or
 * fails with at least one; no message shows the value of an environment
 * variable (config.h promises this, since values are often secrets) unless the
 * input itself holds that text; a loaded configuration differs from itself in
 * nothing, and its field mapping compiles in the event parser. */
#include "../../src/config.c"

#include <stdint.h>

#include "clickloop/event.h"

/* Values a fuzzer cannot guess, so that finding one in a message means it
 * came from the environment. */
#define SECRET_MARK "zq7Secret"

static const struct {
    const char *name;
    const char *value;
} fake_env[] = {
    {"DB_PASSWORD", SECRET_MARK "-pw\"\\}"},
    {"KAFKA_HOST", SECRET_MARK "-host"},
    {"PORT", "13306"},
    {"EMPTY", ""},
    {"NESTED", "${" SECRET_MARK "}"},
    {"DURATION", "5s"},
    {"LIST", "a,b"},
};

static const char *fuzz_env_lookup(const char *name, void *data)
{
    CL_UNUSED(data);
    for (size_t i = 0; i < CL_ARRAY_LEN(fake_env); i++) {
        if (strcmp(fake_env[i].name, name) == 0)
            return fake_env[i].value;
    }
    return NULL;
}

static bool contains(const uint8_t *data, size_t size, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= size; i++) {
        if (memcmp(data + i, needle, n) == 0)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* load_text reads one byte past `len` (json-c sees the NUL as the end). */
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    const cl_config_load_opts_t opts = {fuzz_env_lookup, NULL};
    loader_t ld;
    loader_init(&ld, "fuzz.json", &opts);
    load_text(&ld, text, size);
    cl_config_t *config = NULL;
    cl_config_errors_t errs;
    int rc = loader_finish(&ld, &config, &errs);

    if (rc == CL_OK) {
        if (config == NULL || errs.count != 0)
            abort();
        if (cl_config_diff(config, config, NULL, NULL) != 0)
            abort();
        /* A mapping the loader accepts must compile in the event parser,
         * which ingest builds from it at start: a pointer refused only then
         * would pass --check-config and fail the service. */
        cl_event_parser_t *parser = NULL;
        char err[CL_ERR_LEN];
        if (cl_event_parser_new((const char *const *)config->ingest.mapping,
                                (size_t)config->ingest.max_event_bytes, &parser, err) != CL_OK) {
            fprintf(stderr, "fuzz_config: a loaded mapping is refused by the event parser: %s\n",
                    err);
            abort();
        }
        cl_event_parser_free(parser);
    } else if (config != NULL || errs.count == 0) {
        abort();
    }
    if (!contains(data, size, SECRET_MARK)) {
        for (size_t i = 0; i < errs.count; i++) {
            if (strstr(errs.messages[i], SECRET_MARK) != NULL) {
                fprintf(stderr, "fuzz_config: a message shows an environment value: %s\n",
                        errs.messages[i]);
                abort();
            }
        }
    }
    cl_config_errors_free(&errs);
    cl_config_free(config);
    free(text);
    return 0;
}

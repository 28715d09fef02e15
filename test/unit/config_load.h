/* For the unit tests that include src/config.c: load a configuration held in
 * memory through the loader's own steps; `source_name` stands for the file
 * name in messages. (clickloop itself only loads files.) */
#ifndef CL_TEST_CONFIG_LOAD_H
#define CL_TEST_CONFIG_LOAD_H

static int load_string(const char *json, const char *source_name, const cl_config_load_opts_t *opts,
                       cl_config_t **out, cl_config_errors_t *errs)
{
    loader_t ld;
    loader_init(&ld, source_name, opts);
    load_text(&ld, json, strlen(json));
    return loader_finish(&ld, out, errs);
}

#endif

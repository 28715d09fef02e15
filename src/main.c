/* clickloop: the command line, the signals and the run. Everything else is
 * the app's (include/clickloop/app.h): main loads the configuration, hands
 * it to the app on one libuv loop and turns signals into its calls.
 *
 *   SIGHUP     reload the configuration and apply what changed
 *   SIGTERM    drain and exit (0, or 1 when the drain timeout ran out with
 *   SIGINT     ingest batches unwritten); a second signal exits at once */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "cl_version.h"
#include "clickloop/aggregate_sql.h"
#include "clickloop/app.h"
#include "clickloop/buf.h"
#include "clickloop/config.h"
#include "clickloop/log.h"
#include "clickloop/reload.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: clickloop --config FILE\n"
            "       clickloop --check-config FILE\n"
            "       clickloop --recompute-sql FILE\n"
            "       clickloop --version | --help\n"
            "\n"
            "  -c, --config FILE        run the service with this JSON configuration\n"
            "  -C, --check-config FILE  validate FILE: every problem is printed on stderr as\n"
            "                           'file: json.path: problem'; exit 0 if valid, 1 if not\n"
            "  -R, --recompute-sql FILE print the SQL statement that marks every window of\n"
            "                           FILE's aggregation.windows for recomputation (run it\n"
            "                           against the database; the service works through them)\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit (a second one exits at once);\n"
            "SIGHUP re-reads the configuration and applies what changed.\n"
            "Configuration reference: docs/configuration.md\n");
}

typedef struct {
    const char *path;
    int problems;
} check_t;

static void on_problem(void *arg, const char *message)
{
    check_t *c = arg;
    fprintf(stderr, "%s: %s\n", c->path, message);
    c->problems++;
}

/* The file, checked by the loader and then by the libraries (every
 * kafka.properties entry applied to a scratch librdkafka configuration, and
 * so on: reload.h), so that every problem is named before anything starts.
 * NULL after printing them all. */
static cl_config_t *load_config(const char *path)
{
    cl_config_t *config = NULL;
    cl_config_errors_t errs;
    if (cl_config_load_file(path, NULL, &config, &errs) != CL_OK) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.messages[i]);
        config = NULL;
    }
    cl_config_errors_free(&errs);
    check_t check = {.path = path, .problems = 0};
    if (config != NULL && cl_reload_preflight(config, on_problem, &check) > 0) {
        cl_config_free(config);
        config = NULL;
    }
    return config;
}

/* The statement that marks every window of the configured sizes that holds
 * events dirty, for the runs to recompute (after a change of the window
 * sizes or the session timeout). */
static int print_recompute_sql(const char *path)
{
    cl_config_t *config = load_config(path);
    if (config == NULL)
        return 1;
    cl_aggregate_spec_t spec = {
        .windows_ms = config->aggregation.windows_ms,
        .window_count = config->aggregation.window_count,
        .session_timeout_ms = config->aggregation.session_timeout_ms,
    };
    char err[CL_ERR_LEN];
    cl_buf_t sql;
    cl_buf_init(&sql);
    int rc = cl_aggregate_full_recompute_sql(&sql, &spec, err);
    if (rc == CL_OK)
        printf("%s;\n", sql.data);
    else
        fprintf(stderr, "%s: aggregation: %s\n", path, err);
    cl_buf_free(&sql);
    cl_config_free(config);
    return rc == CL_OK ? 0 : 1;
}

typedef struct {
    cl_app_t *app;
    uv_signal_t sig_term, sig_int, sig_hup;
} run_t;

static void on_signal(uv_signal_t *h, int signum)
{
    run_t *r = h->data;
    if (signum == SIGHUP)
        cl_app_reload(r->app);
    else
        cl_app_shutdown(r->app, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Everything the app ran has closed: the signals go too, and the loop ends. */
static void on_app_closed(void *arg)
{
    run_t *r = arg;
    uv_close((uv_handle_t *)&r->sig_term, NULL);
    uv_close((uv_handle_t *)&r->sig_int, NULL);
    uv_close((uv_handle_t *)&r->sig_hup, NULL);
}

static int run(const char *config_path)
{
    cl_config_t *config = load_config(config_path);
    if (config == NULL)
        return 1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    run_t r;
    r.app = cl_app_new(&loop, config_path, config, on_app_closed, &r);
    cl_log_info("main", "clickloop %s starting with %s", CL_VERSION, config_path);

    uv_signal_t *sigs[] = {&r.sig_term, &r.sig_int, &r.sig_hup};
    const int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < 3; i++) {
        uv_signal_init(&loop, sigs[i]);
        sigs[i]->data = &r;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    cl_app_start(r.app);

    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        cl_log_warn("main", "event loop closed with handles still open");
    int status = cl_app_exit_code(r.app);
    cl_app_free(r.app);
    cl_log_info("main", "exiting with status %d", status);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"recompute-sql", required_argument, NULL, 'R'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:C:R:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'C': {
            cl_config_t *config = load_config(optarg);
            if (config == NULL)
                return 1;
            printf("%s: valid\n", optarg);
            cl_config_free(config);
            return 0;
        }
        case 'R':
            return print_recompute_sql(optarg);
        case 'V':
            printf("clickloop %s\n", CL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    /* A closed peer must surface as an error code, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    return run(config_path);
}

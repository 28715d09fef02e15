/* A small program around the admin server, for test/integration/test_admin.py.
 *
 * It serves a registry with every kind of family (a labelled counter, gauges,
 * a labelled histogram, a family fed by a collector), keeps the loop busy with
 * a 1 ms timer doing fake work whose tick count is exported as
 * clickloop_test_work_ticks_total (so a test sees whether "ingestion" goes on
 * while it attacks the server), and prints `listening on 127.0.0.1:<port>` on
 * stdout once it accepts connections.
 *
 *   SIGUSR1          toggle readiness (starts not ready)
 *   SIGUSR2          the next work tick blocks the loop for --stall-block-ms,
 *                    as a misbehaving callback would
 *   SIGTERM, SIGINT  close the server and every handle, exit 0 if the loop
 *                    closed cleanly
 *
 * Options: --port N (0: any free port), --max-connections N,
 * --request-timeout-ms N, --idle-timeout-ms N, --stall-ms N,
 * --stall-block-ms N. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "clickloop/admin.h"
#include "clickloop/metrics.h"

typedef struct {
    uv_loop_t *loop;
    cl_admin_t *admin;
    cl_metrics_t *metrics;
    uv_timer_t work;
    uv_signal_t sig_usr1, sig_usr2, sig_term, sig_int;
    bool ready;
    bool stall_requested;
    uint64_t stall_block_ms;
    /* What a module would keep in its own stats struct. */
    uint64_t ticks;
    cl_counter_t *m_ticks;
    cl_gauge_t *m_ready;
} server_t;

static void collect(void *arg, cl_metrics_t *m)
{
    server_t *s = arg;
    CL_UNUSED(m);
    cl_counter_set(s->m_ticks, NULL, (double)s->ticks);
    cl_gauge_set(s->m_ready, NULL, s->ready ? 1 : 0);
}

static bool readiness(void *arg, cl_buf_t *missing)
{
    server_t *s = arg;
    if (!s->ready)
        cl_buf_append_str(missing, "no Kafka partitions assigned; MariaDB unreachable");
    return s->ready;
}

/* Block the thread, as a misbehaving callback would; a test-only stall. */
static void block_for(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void on_work(uv_timer_t *t)
{
    server_t *s = t->data;
    s->ticks++;
    if (s->stall_requested) {
        s->stall_requested = false;
        block_for(s->stall_block_ms);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    CL_UNUSED(h);
}

static void on_admin_closed(void *arg)
{
    server_t *s = arg;
    s->admin = NULL;
    uv_close((uv_handle_t *)&s->work, on_handle_closed);
    uv_close((uv_handle_t *)&s->sig_usr1, on_handle_closed);
    uv_close((uv_handle_t *)&s->sig_usr2, on_handle_closed);
    uv_close((uv_handle_t *)&s->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&s->sig_int, on_handle_closed);
}

static void on_signal(uv_signal_t *h, int signum)
{
    server_t *s = h->data;
    switch (signum) {
    case SIGUSR1:
        s->ready = !s->ready;
        break;
    case SIGUSR2:
        s->stall_requested = true;
        break;
    default:
        if (s->admin != NULL)
            cl_admin_close(s->admin, on_admin_closed, s);
        break;
    }
}

static void fill_registry(cl_metrics_t *m)
{
    static const double bounds[] = {0.01, 0.1, 1};
    cl_counter_t *events =
        cl_metrics_counter(m, "clickloop_test_events_total",
                           "Events consumed, by topic and partition.", "topic", "partition", NULL);
    cl_counter_add(events, CL_LABELS("clicks", "0"), 5);
    cl_counter_add(events, CL_LABELS("clicks", "1"), 7);
    cl_counter_add(events, CL_LABELS("we\"ird\\topic\nname", "2"), 1);
    cl_gauge_t *temp = cl_metrics_gauge(m, "clickloop_test_temperature",
                                        "A gauge that went negative.\nSecond line \\ here.", NULL);
    cl_gauge_set(temp, NULL, -3.5);
    cl_histogram_t *lat =
        cl_metrics_histogram(m, "clickloop_test_latency_seconds", "Query latency by dependency.",
                             bounds, CL_ARRAY_LEN(bounds), "dependency", NULL);
    const double observed[] = {0.005, 0.05, 0.05, 2};
    for (size_t i = 0; i < CL_ARRAY_LEN(observed); i++)
        cl_histogram_observe(lat, CL_LABELS("mariadb"), observed[i]);
}

/* 1 000 sockets and more: lift the soft limit on open files to the hard one. */
static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int parse_args(int argc, char **argv, cl_admin_params_t *p, uint64_t *stall_block_ms)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"max-connections", required_argument, NULL, 'c'},
        {"request-timeout-ms", required_argument, NULL, 'r'},
        {"idle-timeout-ms", required_argument, NULL, 'i'},
        {"stall-ms", required_argument, NULL, 's'},
        {"stall-block-ms", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        unsigned long long v = optarg != NULL ? strtoull(optarg, NULL, 10) : 0;
        switch (opt) {
        case 'p':
            p->port = (uint16_t)v;
            break;
        case 'c':
            p->max_connections = (unsigned int)v;
            break;
        case 'r':
            p->request_timeout_ms = v;
            break;
        case 'i':
            p->idle_timeout_ms = v;
            break;
        case 's':
            p->stall_ms = v;
            break;
        case 'b':
            *stall_block_ms = v;
            break;
        default:
            return CL_ERR;
        }
    }
    return CL_OK;
}

int main(int argc, char **argv)
{
    server_t s;
    memset(&s, 0, sizeof s);
    s.stall_block_ms = 3000;
    cl_admin_params_t params = {.host = "127.0.0.1"};
    if (parse_args(argc, argv, &params, &s.stall_block_ms) != CL_OK) {
        fprintf(stderr, "usage: admin_server [--port N] [--max-connections N] "
                        "[--request-timeout-ms N] [--idle-timeout-ms N] [--stall-ms N] "
                        "[--stall-block-ms N]\n");
        return 2;
    }
    raise_nofile_limit();
    /* As in main: a peer that went away must surface as EPIPE from a write,
     * not kill the process (libuv writes with write(2), which raises it). */
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    uv_loop_init(&loop);
    s.loop = &loop;
    s.metrics = cl_metrics_new();
    fill_registry(s.metrics);
    s.m_ticks = cl_metrics_counter(s.metrics, "clickloop_test_work_ticks_total",
                                   "Ticks of the fake work timer.", NULL);
    s.m_ready = cl_metrics_gauge(s.metrics, "clickloop_test_ready", "1 when ready.", NULL);
    cl_metrics_add_collector(s.metrics, collect, &s);

    uv_timer_init(&loop, &s.work);
    s.work.data = &s;
    uv_timer_start(&s.work, on_work, 1, 1);
    uv_signal_t *sigs[] = {&s.sig_usr1, &s.sig_usr2, &s.sig_term, &s.sig_int};
    int signums[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT};
    for (size_t i = 0; i < CL_ARRAY_LEN(sigs); i++) {
        uv_signal_init(&loop, sigs[i]);
        sigs[i]->data = &s;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }

    s.admin = cl_admin_new(&loop, &params, s.metrics, readiness, &s);
    char err[CL_ERR_LEN];
    int exit_code = 0;
    if (cl_admin_start(s.admin, err) != CL_OK) {
        fprintf(stderr, "admin_server: %s\n", err);
        exit_code = 1;
        cl_admin_close(s.admin, on_admin_closed, &s);
    } else {
        printf("listening on 127.0.0.1:%u\n", (unsigned)cl_admin_port(s.admin));
        fflush(stdout);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "admin_server: handles left open on the loop\n");
        exit_code = 3;
    }
    cl_metrics_free(s.metrics);
    return exit_code;
}

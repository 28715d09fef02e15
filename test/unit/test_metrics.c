/* Unit tests for the metrics registry and its Prometheus text rendering. The
 * output of a realistic registry is also checked with the reference Python
 * parser, in test/integration/test_admin.py. */
#include "clickloop/metrics.h"
#include "clickloop/common.h"

#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cl_test.h"

static char *render(cl_metrics_t *m)
{
    cl_buf_t out;
    cl_buf_init(&out);
    cl_metrics_render(m, &out);
    return cl_buf_steal(&out, NULL);
}

static void test_render_exact_text_of_small_registry(void)
{
    static const double bounds[] = {0.1, 1};
    cl_metrics_t *m = cl_metrics_new();
    cl_counter_t *c = cl_metrics_counter(m, "clickloop_events_total", "Events consumed.", "topic",
                                         "partition", NULL);
    cl_gauge_t *g = cl_metrics_gauge(m, "clickloop_in_flight", "Events in flight.", NULL);
    cl_histogram_t *h =
        cl_metrics_histogram(m, "clickloop_batch_seconds", "Batch latency.", bounds, 2, NULL);
    cl_counter_add(c, CL_LABELS("clicks", "0"), 3);
    cl_counter_add(c, CL_LABELS("clicks", "1"), 1);
    cl_counter_add(c, CL_LABELS("clicks", "0"), 2);
    cl_gauge_set(g, NULL, 42);
    cl_histogram_observe(h, NULL, 0.05);
    cl_histogram_observe(h, NULL, 0.5);
    char *text = render(m);
    CL_ASSERT_STR_EQ("# HELP clickloop_events_total Events consumed.\n"
                     "# TYPE clickloop_events_total counter\n"
                     "clickloop_events_total{topic=\"clicks\",partition=\"0\"} 5\n"
                     "clickloop_events_total{topic=\"clicks\",partition=\"1\"} 1\n"
                     "# HELP clickloop_in_flight Events in flight.\n"
                     "# TYPE clickloop_in_flight gauge\n"
                     "clickloop_in_flight 42\n"
                     "# HELP clickloop_batch_seconds Batch latency.\n"
                     "# TYPE clickloop_batch_seconds histogram\n"
                     "clickloop_batch_seconds_bucket{le=\"0.1\"} 1\n"
                     "clickloop_batch_seconds_bucket{le=\"1\"} 2\n"
                     "clickloop_batch_seconds_bucket{le=\"+Inf\"} 2\n"
                     "clickloop_batch_seconds_sum 0.55\n"
                     "clickloop_batch_seconds_count 2\n",
                     text);
    free(text);
    cl_metrics_free(m);
}

static void test_label_values_escape_backslash_quote_and_newline(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_gauge_t *g =
        cl_metrics_gauge(m, "clickloop_x", "Help with \\ and\nnewline and \"quotes\".", "v", NULL);
    cl_gauge_set(g, CL_LABELS("a\\b\"c\nd"), 1);
    char *text = render(m);
    CL_ASSERT_STR_EQ("# HELP clickloop_x Help with \\\\ and\\nnewline and \"quotes\".\n"
                     "# TYPE clickloop_x gauge\n"
                     "clickloop_x{v=\"a\\\\b\\\"c\\nd\"} 1\n",
                     text);
    free(text);
    cl_metrics_free(m);
}

static void test_histogram_buckets_are_cumulative_and_end_with_inf(void)
{
    static const double bounds[] = {1, 2, 5};
    cl_metrics_t *m = cl_metrics_new();
    cl_histogram_t *h = cl_metrics_histogram(m, "clickloop_h", "H.", bounds, 3, "dependency", NULL);
    /* A value equal to a bound counts in that bucket (le = less or equal). */
    const double values[] = {0.5, 1, 1.5, 2, 7, 100};
    for (size_t i = 0; i < CL_ARRAY_LEN(values); i++)
        cl_histogram_observe(h, CL_LABELS("mariadb"), values[i]);
    char *text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "clickloop_h_bucket{dependency=\"mariadb\",le=\"1\"} 2\n"
                                 "clickloop_h_bucket{dependency=\"mariadb\",le=\"2\"} 4\n"
                                 "clickloop_h_bucket{dependency=\"mariadb\",le=\"5\"} 4\n"
                                 "clickloop_h_bucket{dependency=\"mariadb\",le=\"+Inf\"} 6\n"
                                 "clickloop_h_sum{dependency=\"mariadb\"} 112\n"
                                 "clickloop_h_count{dependency=\"mariadb\"} 6\n");
    free(text);
    cl_metrics_free(m);
}

static void test_unlabelled_family_renders_zero_before_first_use(void)
{
    static const double bounds[] = {1};
    cl_metrics_t *m = cl_metrics_new();
    cl_metrics_counter(m, "clickloop_c_total", "C.", NULL);
    cl_metrics_histogram(m, "clickloop_h", "H.", bounds, 1, NULL);
    char *text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "\nclickloop_c_total 0\n");
    CL_ASSERT_STR_CONTAINS(text, "\nclickloop_h_bucket{le=\"1\"} 0\n"
                                 "clickloop_h_bucket{le=\"+Inf\"} 0\n"
                                 "clickloop_h_sum 0\n"
                                 "clickloop_h_count 0\n");
    free(text);
    cl_metrics_free(m);
}

static void test_labelled_family_without_series_renders_help_and_type_only(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_metrics_counter(m, "clickloop_c_total", "C.", "topic", NULL);
    char *text = render(m);
    CL_ASSERT_STR_EQ("# HELP clickloop_c_total C.\n# TYPE clickloop_c_total counter\n", text);
    free(text);
    cl_metrics_free(m);
}

static void test_counter_ignores_negative_increments(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_counter_t *c = cl_metrics_counter(m, "clickloop_c_total", "C.", NULL);
    cl_counter_add(c, NULL, 2);
    cl_counter_add(c, NULL, -1);
    cl_counter_add(c, NULL, NAN);
    char *text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "\nclickloop_c_total 2\n");
    free(text);
    cl_metrics_free(m);
}

static void test_gauge_set_replaces_and_clear_drops_series(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_gauge_t *g = cl_metrics_gauge(m, "clickloop_lag", "Lag.", "partition", NULL);
    cl_gauge_set(g, CL_LABELS("0"), 5);
    cl_gauge_set(g, CL_LABELS("0"), 3);
    cl_gauge_set(g, CL_LABELS("1"), 7);
    char *text = render(m);
    CL_ASSERT_STR_CONTAINS(text,
                           "clickloop_lag{partition=\"0\"} 3\nclickloop_lag{partition=\"1\"} 7\n");
    free(text);
    cl_gauge_clear(g);
    cl_gauge_set(g, CL_LABELS("2"), 1);
    text = render(m);
    CL_ASSERT_STR_EQ("# HELP clickloop_lag Lag.\n# TYPE clickloop_lag gauge\n"
                     "clickloop_lag{partition=\"2\"} 1\n",
                     text);
    free(text);
    cl_metrics_free(m);
}

typedef struct {
    cl_gauge_t *gauge;
    int calls;
    char order[8];
} collector_state_t;

static void collect_first(void *arg, cl_metrics_t *m)
{
    collector_state_t *st = arg;
    CL_UNUSED(m);
    st->calls++;
    strcat(st->order, "1");
    cl_gauge_set(st->gauge, NULL, st->calls * 10);
}

static void collect_second(void *arg, cl_metrics_t *m)
{
    collector_state_t *st = arg;
    CL_UNUSED(m);
    strcat(st->order, "2");
}

static void test_collectors_run_in_order_before_each_render(void)
{
    cl_metrics_t *m = cl_metrics_new();
    collector_state_t st = {0};
    st.gauge = cl_metrics_gauge(m, "clickloop_g", "G.", NULL);
    cl_metrics_add_collector(m, collect_first, &st);
    cl_metrics_add_collector(m, collect_second, &st);
    char *text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "\nclickloop_g 10\n");
    CL_ASSERT_STR_EQ("12", st.order);
    free(text);
    text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "\nclickloop_g 20\n");
    free(text);
    cl_metrics_remove_collector(m, collect_first, &st);
    text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "\nclickloop_g 20\n");
    CL_ASSERT_STR_EQ("12122", st.order);
    free(text);
    cl_metrics_free(m);
}

static void test_registering_the_same_family_again_returns_it(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_counter_t *a = cl_metrics_counter(m, "clickloop_c_total", "C.", "code", NULL);
    cl_counter_t *b = cl_metrics_counter(m, "clickloop_c_total", "C.", "code", NULL);
    CL_ASSERT(a == b);
    cl_counter_add(a, CL_LABELS("200"), 1);
    cl_counter_add(b, CL_LABELS("200"), 1);
    char *text = render(m);
    CL_ASSERT_STR_EQ("# HELP clickloop_c_total C.\n# TYPE clickloop_c_total counter\n"
                     "clickloop_c_total{code=\"200\"} 2\n",
                     text);
    free(text);
    cl_metrics_free(m);
}

static void test_ill_formed_utf8_label_value_becomes_replacement_character(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_gauge_t *g = cl_metrics_gauge(m, "clickloop_g", "G.", "v", NULL);
    /* 0xFF never occurs in UTF-8; 0xC3 starts a sequence that is cut short. */
    cl_gauge_set(g, CL_LABELS("a\377b\303"), 1);
    char *text = render(m);
    CL_ASSERT_STR_CONTAINS(text, "clickloop_g{v=\"a\357\277\275b\357\277\275\"} 1\n");
    free(text);
    cl_metrics_free(m);
}

static void test_values_use_the_shortest_exact_text(void)
{
    char buf[32];
    CL_ASSERT_STR_EQ("3", cl_metrics_format_value(3, buf));
    CL_ASSERT_STR_EQ("0", cl_metrics_format_value(0, buf));
    CL_ASSERT_STR_EQ("-2.5", cl_metrics_format_value(-2.5, buf));
    CL_ASSERT_STR_EQ("0.1", cl_metrics_format_value(0.1, buf));
    CL_ASSERT_STR_EQ("0.001", cl_metrics_format_value(0.001, buf));
    CL_ASSERT_STR_EQ("1000000", cl_metrics_format_value(1e6, buf));
    CL_ASSERT_STR_EQ("9007199254740994", cl_metrics_format_value(9007199254740994.0, buf));
    CL_ASSERT_STR_EQ("1.8446744073709552e+19",
                     cl_metrics_format_value(18446744073709551616.0, buf));
    CL_ASSERT_STR_EQ("1e+21", cl_metrics_format_value(1e21, buf));
    CL_ASSERT_STR_EQ("+Inf", cl_metrics_format_value(INFINITY, buf));
    CL_ASSERT_STR_EQ("-Inf", cl_metrics_format_value(-INFINITY, buf));
    CL_ASSERT_STR_EQ("NaN", cl_metrics_format_value(NAN, buf));
    double third = 1.0 / 3.0;
    CL_ASSERT(strtod(cl_metrics_format_value(third, buf), NULL) == third);
}

/* Run fn in a child process and report whether it died of SIGABRT. */
static int aborts(void (*fn)(void))
{
    pid_t pid = fork();
    if (pid == 0) {
        /* Keep the child's expected complaint out of the test log. */
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        fn();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void register_counter_without_total(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_metrics_counter(m, "clickloop_events", "E.", NULL);
}

static void register_same_name_other_type(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_metrics_gauge(m, "clickloop_x", "X.", NULL);
    cl_metrics_gauge(m, "clickloop_x", "X.", "label", NULL);
}

static void register_invalid_label_name(void)
{
    cl_metrics_t *m = cl_metrics_new();
    cl_metrics_gauge(m, "clickloop_x", "X.", "bad-name", NULL);
}

static void register_histogram_with_unsorted_bounds(void)
{
    static const double bounds[] = {1, 1};
    cl_metrics_t *m = cl_metrics_new();
    cl_metrics_histogram(m, "clickloop_h", "H.", bounds, 2, NULL);
}

static void test_registration_mistakes_abort(void)
{
    CL_ASSERT(aborts(register_counter_without_total));
    CL_ASSERT(aborts(register_same_name_other_type));
    CL_ASSERT(aborts(register_invalid_label_name));
    CL_ASSERT(aborts(register_histogram_with_unsorted_bounds));
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_render_exact_text_of_small_registry),
    CL_TEST(test_label_values_escape_backslash_quote_and_newline),
    CL_TEST(test_histogram_buckets_are_cumulative_and_end_with_inf),
    CL_TEST(test_unlabelled_family_renders_zero_before_first_use),
    CL_TEST(test_labelled_family_without_series_renders_help_and_type_only),
    CL_TEST(test_counter_ignores_negative_increments),
    CL_TEST(test_gauge_set_replaces_and_clear_drops_series),
    CL_TEST(test_collectors_run_in_order_before_each_render),
    CL_TEST(test_registering_the_same_family_again_returns_it),
    CL_TEST(test_ill_formed_utf8_label_value_becomes_replacement_character),
    CL_TEST(test_values_use_the_shortest_exact_text),
    CL_TEST(test_registration_mistakes_abort),
};

CL_TEST_MAIN(cases)

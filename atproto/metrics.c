#include "atproto/metrics.h"

#include <stdlib.h>
#include <string.h>

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

#define HISTOGRAM_BUCKETS 12
/* Each bound with its label as the exposition writes it (what "%g" makes of it). */
static const struct {
    double bound;
    const char *label;
} buckets[HISTOGRAM_BUCKETS] = {
    {0.0001, "0.0001"}, {0.00025, "0.00025"}, {0.0005, "0.0005"}, {0.001, "0.001"},
    {0.0025, "0.0025"}, {0.005, "0.005"},     {0.01, "0.01"},     {0.025, "0.025"},
    {0.05, "0.05"},     {0.1, "0.1"},         {1, "1"},           {10, "10"}};

struct metrics_histogram {
    uint64_t buckets[HISTOGRAM_BUCKETS + 1]; /* last: +Inf */
    uint64_t count;
    double sum;
};

typedef struct metric {
    struct metric *next;
    enum metric_kind kind;
    char *name; /* full name, with labels */
    char *help;
    uint64_t counter;
    metrics_gauge_fn gauge;
    void *gauge_ud;
    metrics_histogram hist;
} metric;

static metric *head, *tail;

static metric *find_or_add(const char *name, const char *help, enum metric_kind kind)
{
    for (metric *m = head; m; m = m->next)
        if (!strcmp(m->name, name)) return m;
    metric *m = calloc(1, sizeof *m);
    if (!m) abort(); /* registration happens at start-up: no way to serve without it */
    m->name = strdup(name);
    m->help = strdup(help);
    if (!m->name || !m->help) abort();
    m->kind = kind;
    if (tail)
        tail->next = m;
    else
        head = m;
    tail = m;
    return m;
}

uint64_t *metrics_counter(const char *name, const char *help)
{
    return &find_or_add(name, help, METRIC_COUNTER)->counter;
}

void metrics_gauge(const char *name, const char *help, metrics_gauge_fn fn, void *ud)
{
    metric *m = find_or_add(name, help, METRIC_GAUGE);
    m->gauge = fn;
    m->gauge_ud = ud;
}

metrics_histogram *metrics_histogram_get(const char *name, const char *help)
{
    return &find_or_add(name, help, METRIC_HISTOGRAM)->hist;
}

void metrics_observe(metrics_histogram *h, double seconds)
{
    int i = 0;
    while (i < HISTOGRAM_BUCKETS && seconds > buckets[i].bound)
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}

double metrics_quantile(const metrics_histogram *h, double q)
{
    if (!h->count) return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;
    for (int i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) return buckets[i].bound;
    }
    return buckets[HISTOGRAM_BUCKETS - 1].bound;
}

static size_t base_len(const char *name)
{
    const char *brace = strchr(name, '{');
    return brace ? (size_t)(brace - name) : strlen(name);
}

/* Lines are put together from their parts: a scrape writes hundreds of them, and printf made
 * a scrape take about a million instructions of the event loop the ingester runs on. */
static void put_parts(buf *out, const char *const *parts)
{
    for (; *parts; parts++)
        buf_puts(out, *parts);
}
#define PUT(out, ...) put_parts((out), (const char *const[]){__VA_ARGS__, NULL})

static void put_u64_line(buf *out, uint64_t v)
{
    char t[21];
    char *end = buf_format_ull(t, v);
    *end++ = '\n';
    buf_append(out, t, (size_t)(end - t));
}

static void render_header(buf *out, const metric *m, const metric *prev)
{
    static const char *types[] = {"counter", "gauge", "histogram"};
    size_t n = base_len(m->name);
    if (prev && base_len(prev->name) == n && !strncmp(prev->name, m->name, n)) return;
    buf_puts(out, "# HELP ");
    buf_append(out, m->name, n);
    PUT(out, " ", m->help, "\n# TYPE ");
    buf_append(out, m->name, n);
    PUT(out, " ", types[m->kind], "\n");
}

static void render_histogram(buf *out, const metric *m)
{
    uint64_t cumulative = 0;
    for (int i = 0; i <= HISTOGRAM_BUCKETS; i++) {
        cumulative += m->hist.buckets[i];
        PUT(out, m->name, "_bucket{le=\"", i < HISTOGRAM_BUCKETS ? buckets[i].label : "+Inf",
            "\"} ");
        put_u64_line(out, cumulative);
    }
    buf_printf(out, "%s_sum %.6f\n", m->name, m->hist.sum);
    PUT(out, m->name, "_count ");
    put_u64_line(out, m->hist.count);
}

void metrics_render(buf *out)
{
    const metric *prev = NULL;
    for (const metric *m = head; m; prev = m, m = m->next) {
        render_header(out, m, prev);
        switch (m->kind) {
        case METRIC_COUNTER:
            PUT(out, m->name, " ");
            put_u64_line(out, m->counter);
            break;
        case METRIC_GAUGE:
            buf_printf(out, "%s %.17g\n", m->name, m->gauge ? m->gauge(m->gauge_ud) : 0.0);
            break;
        case METRIC_HISTOGRAM:
            render_histogram(out, m);
            break;
        }
    }
}

void metrics_free_all(void)
{
    while (head) {
        metric *next = head->next;
        free(head->name);
        free(head->help);
        free(head);
        head = next;
    }
    tail = NULL;
}

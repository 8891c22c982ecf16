/* atproto/log: libwebsockets' own messages come out as our log lines; a repeated event is
 * said once per interval with a count of the rest. */
#include <uv.h> /* before libwebsockets.h, so lws sees libuv's types */

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "atproto/log.h"
#include "tests/unit/capture.h"

static void test_lws_lines(void)
{
    capture c;
    if (capture_start(&c, stderr) < 0) return;
    log_capture_lws();
    lwsl_err("boom %d\r\n", 7);
    lwsl_warn("careful\n");
    lwsl_notice("quiet\n");
    char out[1024];
    capture_end(&c, out, sizeof out);
    CHECK(strstr(out, " ERROR lws: boom 7\n") != NULL);
    CHECK(strstr(out, " WARN lws: careful\n") != NULL);
    CHECK(strstr(out, "quiet") == NULL);
    CHECK(strstr(out, " \n") == NULL);
}

static void test_limited_lines(void)
{
    capture c;
    if (capture_start(&c, stderr) < 0) return;
    log_limit l = {0}, other = {0};
    for (int i = 0; i < 1000; i++)
        log_limited(&l, LOG_WARN, "t", "refused %d", i);
    log_limited(&other, LOG_WARN, "t", "another kind");
    l.said_ms -= LOG_LIMIT_MS; /* as if the interval had passed */
    log_limited(&l, LOG_WARN, "t", "refused again");
    char out[4096];
    capture_end(&c, out, sizeof out);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++)
        lines++;
    CHECK(lines == 3);
    CHECK(strstr(out, " WARN t: refused 0\n") != NULL);
    CHECK(strstr(out, " WARN t: another kind\n") != NULL);
    CHECK(strstr(out, " WARN t: refused again (and 999 more like it)\n") != NULL);
}

int main(void)
{
    RUN(test_lws_lines);
    RUN(test_limited_lines);
    CHECK_EXIT();
}

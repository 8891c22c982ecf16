/* atproto/freelist: a freed block is the next one given out, the list keeps at most max, and
 * clear frees what it keeps (LeakSanitizer, under make test, reports what it would not). */
#include <string.h>

#include "atproto/freelist.h"
#include "tests/unit/check.h"

static void test_reuses_the_last_block_freed(void)
{
    freelist f = FREELIST_INIT(48, 4);
    char *a = freelist_get(&f), *b = freelist_get(&f);
    CHECK(a && b && a != b);
    memset(a, 'a', 48); /* the whole block is the caller's */
    freelist_put(&f, a);
    freelist_put(&f, b);
    CHECK(f.count == 2);
    CHECK(freelist_get(&f) == b);
    CHECK(freelist_get(&f) == a);
    CHECK(f.count == 0);
    freelist_put(&f, a);
    freelist_put(&f, b);
    freelist_put(&f, NULL);
    CHECK(f.count == 2);
    freelist_clear(&f);
    CHECK(f.count == 0 && f.head == NULL);
}

static void test_keeps_at_most_max(void)
{
    freelist f = FREELIST_INIT(16, 2);
    void *p[5];
    for (int i = 0; i < 5; i++)
        CHECK((p[i] = freelist_get(&f)) != NULL);
    for (int i = 0; i < 5; i++)
        freelist_put(&f, p[i]);
    CHECK(f.count == 2);
    /* The two kept are the first two freed: the later ones went back to free(). */
    void *x = freelist_get(&f), *y = freelist_get(&f);
    CHECK((x == p[1] && y == p[0]));
    freelist_put(&f, x);
    freelist_put(&f, y);
    freelist_clear(&f);
}

static void test_blocks_smaller_than_a_link(void)
{
    freelist f = FREELIST_INIT(1, 8);
    char *a = freelist_get(&f);
    CHECK(a != NULL);
    *a = 'x';
    freelist_put(&f, a);
    CHECK(freelist_get(&f) == a);
    freelist_put(&f, a);
    freelist_clear(&f);
}

int main(void)
{
    RUN(test_reuses_the_last_block_freed);
    RUN(test_keeps_at_most_max);
    RUN(test_blocks_smaller_than_a_link);
    CHECK_EXIT();
}

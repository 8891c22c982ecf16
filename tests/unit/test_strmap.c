/* atproto/strmap: lookups, replacement with values of another size, deletion, growth, clear,
 * and a map that keeps deleting and adding (its deleted slots are reused and cleaned up). */
#include <stdio.h>
#include <string.h>

#include "atproto/strmap.h"
#include "check.h"

static int has(const strmap *m, const char *k, const char *v)
{
    size_t n;
    const char *got = strmap_get(m, k, strlen(k), &n);
    return got && n == strlen(v) && memcmp(got, v, n) == 0;
}

static void test_put_get_del(void)
{
    strmap *m = strmap_new();
    CHECK(m);
    CHECK(!strmap_get(m, "a", 1, NULL));
    CHECK(strmap_put(m, "a", 1, "one", 3) == 0);
    CHECK(strmap_put(m, "ab", 2, "two", 3) == 0);
    CHECK(has(m, "a", "one") && has(m, "ab", "two"));
    CHECK(strmap_put(m, "a", 1, "uno", 3) == 0); /* same size: in place */
    CHECK(strmap_put(m, "ab", 2, "a longer value", 14) == 0);
    CHECK(has(m, "a", "uno") && has(m, "ab", "a longer value"));
    CHECK(strmap_count(m) == 2);
    CHECK(strmap_put(m, "", 0, "", 0) == 0); /* an empty key and value are values too */
    CHECK(has(m, "", ""));
    strmap_del(m, "a", 1);
    strmap_del(m, "missing", 7);
    CHECK(!strmap_get(m, "a", 1, NULL) && has(m, "ab", "a longer value"));
    CHECK(strmap_count(m) == 2);
    strmap_free(m);
}

/* Keys with embedded NULs are distinct by their bytes, not as C strings. */
static void test_binary_keys(void)
{
    strmap *m = strmap_new();
    CHECK(strmap_put(m, "x\0y", 3, "1", 1) == 0 && strmap_put(m, "x\0z", 3, "2", 1) == 0);
    size_t n;
    const char *v = strmap_get(m, "x\0z", 3, &n);
    CHECK(v && n == 1 && *v == '2');
    CHECK(!strmap_get(m, "x", 1, NULL));
    strmap_free(m);
}

static void test_grow_and_clear(void)
{
    strmap *m = strmap_new();
    char k[32], v[32];
    for (int i = 0; i < 100000; i++) {
        int kn = snprintf(k, sizeof k, "did:plc:%d", i), vn = snprintf(v, sizeof v, "%d", i * 7);
        CHECK(strmap_put(m, k, (size_t)kn, v, (size_t)vn) == 0);
    }
    CHECK(strmap_count(m) == 100000);
    int wrong = 0;
    for (int i = 0; i < 100000; i += 97) {
        int kn = snprintf(k, sizeof k, "did:plc:%d", i);
        snprintf(v, sizeof v, "%d", i * 7);
        wrong += !has(m, k, v);
        (void)kn;
    }
    CHECK(wrong == 0);
    strmap_clear(m);
    CHECK(strmap_count(m) == 0 && !strmap_get(m, "did:plc:5", 9, NULL));
    CHECK(strmap_put(m, "k", 1, "v", 1) == 0 && has(m, "k", "v"));
    strmap_free(m);
}

/* Counts the entries seen with their own key ("k<digit>" holds "<digit>"). */
static int odd(const char *key, size_t keylen, const void *val, size_t vlen, void *ud)
{
    if (keylen == 2 && vlen == 1 && key[1] == *(const char *)val) (*(int *)ud)++;
    return vlen == 1 && (*(const char *)val - '0') % 2;
}

/* Counts every entry and drops it. */
static int count_all(const char *key, size_t keylen, const void *val, size_t vlen, void *ud)
{
    (*(int *)ud)++;
    return 1;
}

static void test_sweep(void)
{
    strmap *m = strmap_new();
    char k[16], v[2] = {0};
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "k%d", i);
        v[0] = (char)('0' + i);
        CHECK(strmap_put(m, k, strlen(k), v, 1) == 0);
    }
    int seen = 0;
    strmap_sweep(m, odd, &seen);
    CHECK(seen == 10 && strmap_count(m) == 5);
    CHECK(has(m, "k4", "4") && !strmap_get(m, "k5", 2, NULL));
    strmap_free(m);
}

/* A window of 1000 live keys slides over 200,000: every put follows a delete, so deleted
 * slots pile up and must be reused or swept away, and every lookup must still find its key. */
static void test_churn(void)
{
    strmap *m = strmap_new();
    char k[32];
    int wrong = 0;
    for (int i = 0; i < 200000; i++) {
        int kn = snprintf(k, sizeof k, "did:plc:%d", i);
        CHECK(strmap_put(m, k, (size_t)kn, &i, sizeof i) == 0);
        if (i >= 1000) {
            kn = snprintf(k, sizeof k, "did:plc:%d", i - 1000);
            strmap_del(m, k, (size_t)kn);
        }
        if (i % 997 == 0) {
            int probe = i - 999 < 0 ? 0 : i - 999;
            kn = snprintf(k, sizeof k, "did:plc:%d", probe);
            size_t n;
            const int *v = strmap_get(m, k, (size_t)kn, &n);
            wrong += !v || n != sizeof i || memcmp(v, &probe, sizeof probe) != 0;
            kn = snprintf(k, sizeof k, "did:plc:%d", i - 1000);
            wrong += i >= 1000 && strmap_get(m, k, (size_t)kn, NULL) != NULL;
        }
    }
    CHECK(wrong == 0);
    CHECK(strmap_count(m) == 1000);
    int seen = 0;
    strmap_sweep(m, count_all, &seen);
    CHECK(seen == 1000 && strmap_count(m) == 0);
    strmap_free(m);
}

int main(void)
{
    RUN(test_churn);
    RUN(test_sweep);
    RUN(test_put_get_del);
    RUN(test_binary_keys);
    RUN(test_grow_and_clear);
    CHECK_EXIT();
}

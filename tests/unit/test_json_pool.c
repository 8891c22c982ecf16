/* atproto/json_pool: jansson values of every size made, compared and freed through the pool;
 * freed blocks are used again; json_pool_dump gives malloc'd compact JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/json_pool.h"
#include "check.h"

/* Strings of 0 to 600 bytes cross every block size and the malloc'd large blocks. */
static json_t *build(int n)
{
    json_t *obj = json_object(), *arr = json_array();
    char s[601];
    for (int len = 0; len <= 600; len += 7) {
        memset(s, 'a' + len % 26, (size_t)len);
        s[len] = 0;
        char key[16];
        snprintf(key, sizeof key, "k%d-%d", n, len);
        json_object_set_new(obj, key, json_stringn(s, (size_t)len));
        json_array_append_new(arr, json_integer(len));
    }
    json_object_set_new(obj, "list", arr);
    return obj;
}

static void test_values_round_trip(void)
{
    for (int round = 0; round < 50; round++) {
        json_t *a = build(round), *b = build(round);
        CHECK(json_equal(a, b));
        json_t *c = json_deep_copy(a);
        CHECK(json_equal(a, c));
        json_object_set_new(c, "list", json_string("changed"));
        CHECK(!json_equal(a, c));
        json_decref(a);
        json_decref(b);
        json_decref(c);
    }
}

/* 100 bytes: the text's block is not of the size of jansson's string struct. */
static void test_freed_blocks_are_reused(void)
{
    char text[101];
    memset(text, 'x', 100);
    text[100] = 0;
    json_t *s = json_string(text);
    const char *first = json_string_value(s);
    json_decref(s);
    text[0] = 'y';
    s = json_string(text);
    CHECK(json_string_value(s) == first);
    json_decref(s);
}

static void test_dump(void)
{
    json_t *v = json_pack("{s:s, s:[i, i]}", "name", "x\"y", "n", 1, 2);
    size_t len = 0;
    char *text = json_pool_dump(v, &len);
    CHECK(text && !strcmp(text, "{\"name\":\"x\\\"y\",\"n\":[1,2]}"));
    CHECK(text && len == strlen(text));
    free(text);
    json_decref(v);
}

int main(void)
{
    json_pool_install();
    RUN(test_values_round_trip);
    RUN(test_freed_blocks_are_reused);
    RUN(test_dump);
    CHECK_EXIT();
}

/* cache/slots: Valkey Cluster's addressing without a socket: key slots (CRC16 and hash tags, as
 * the cluster specification gives them), CLUSTER SLOTS replies, redirections, seed lists, and
 * when a WAIT went far enough. */
#include <string.h>

#include "cache/slots.h"
#include "check.h"

static unsigned slot(const char *key)
{
    return slot_of_key(key, strlen(key));
}

static void test_crc16_check_value(void)
{
    /* the specification's check value of its CRC16 variant */
    CHECK(slot_crc16("123456789", 9) == 0x31c3);
    CHECK(slot_crc16("", 0) == 0);
}

static void test_key_slots(void)
{
    /* CLUSTER KEYSLOT answers (the specification and the command's documentation) */
    CHECK(slot("somekey") == 11058);
    CHECK(slot("foo{hash_tag}") == 2515);
    CHECK(slot("foo") == 12182);
    CHECK(slot("bar") == 5061);
    /* a hash tag: what lies between the first '{' and the next '}' */
    CHECK(slot("{user1000}.following") == slot("{user1000}.followers"));
    CHECK(slot("{user1000}.following") == slot("user1000"));
    CHECK(slot("foo{bar}{zap}") == slot("bar"));
    CHECK(slot("foo{{bar}}zap") == slot("{bar"));
    /* an empty tag, or none closed: the whole key */
    CHECK(slot("foo{}{bar}") == (slot_crc16("foo{}{bar}", 10) & 16383));
    CHECK(slot("foo{bar") == (slot_crc16("foo{bar", 7) & 16383));
    /* every key of a DID lives on its DID's slot; the global keys on their own */
    CHECK(slot("atcr:{did:plc:abc}/recs") == slot("did:plc:abc"));
    CHECK(slot("atcr:{did:plc:abc}/repo/app/manifests") == slot("did:plc:abc"));
    CHECK(slot("atcr:recent") != slot("atcr:cursor:v1"));
    /* NUL bytes count: keys are binary */
    CHECK(slot_of_key("a\0b", 3) != slot_of_key("a", 1));
}

/* ---- replies built by hand ---- */

static reply r_int(long long v)
{
    return (reply){.type = REPLY_INTEGER, .integer = v};
}

static reply r_str(const char *s)
{
    return (reply){.type = REPLY_STRING, .str = s, .len = strlen(s)};
}

static reply r_arr(const reply *const *e, size_t n)
{
    return (reply){.type = REPLY_ARRAY, .element = e, .elements = n};
}

static void test_slot_map(void)
{
    reply h1 = r_str("10.0.0.1"), p1 = r_int(7000), id1 = r_str("aaa");
    reply h2 = r_str("10.0.0.2"), p2 = r_int(7001), id2 = r_str("bbb");
    reply hr = r_str("10.0.0.9"), pr = r_int(7009);
    reply nil = {.type = REPLY_NIL}, p3 = r_int(7002);
    const reply *n1e[] = {&h1, &p1, &id1}, *n2e[] = {&h2, &p2, &id2}, *nre[] = {&hr, &pr},
                *n3e[] = {&nil, &p3};
    reply n1 = r_arr(n1e, 3), n2 = r_arr(n2e, 3), nr = r_arr(nre, 2), n3 = r_arr(n3e, 2);
    reply a0 = r_int(0), a1 = r_int(5460), b0 = r_int(5461), b1 = r_int(10922), c0 = r_int(10923),
          c1 = r_int(16383), d0 = r_int(100), d1 = r_int(100);
    /* a primary serving two ranges, one with a replica; one announcing no host */
    const reply *ra[] = {&a0, &a1, &n1, &nr}, *rb[] = {&b0, &b1, &n2}, *rc[] = {&c0, &c1, &n3},
                *rd[] = {&d0, &d1, &n1};
    reply ranges[] = {r_arr(ra, 4), r_arr(rb, 3), r_arr(rc, 3), r_arr(rd, 3)};
    const reply *top[] = {&ranges[0], &ranges[1], &ranges[2], &ranges[3]};
    reply all = r_arr(top, 4);
    slot_map m;
    char why[96];
    CHECK(slot_map_parse(&all, "10.0.0.5", &m, why, sizeof why) == 0);
    CHECK(m.nprimaries == 3);
    CHECK(slot_map_complete(&m));
    CHECK(!strcmp(m.primaries[m.owner[0]].host, "10.0.0.1") &&
          m.primaries[m.owner[0]].port == 7000);
    CHECK(m.owner[5460] == m.owner[0] && m.owner[5461] != m.owner[0]);
    CHECK(m.primaries[m.owner[10922]].port == 7001);
    /* nil host: the node that answered */
    CHECK(!strcmp(m.primaries[m.owner[16383]].host, "10.0.0.5"));
    slot_map_free(&m);

    /* a map with a hole: slots without a primary (a failover under way) */
    reply part = r_arr(top, 2);
    CHECK(slot_map_parse(&part, "h", &m, why, sizeof why) == 0);
    CHECK(!slot_map_complete(&m) && m.owner[16000] == SLOT_NONE);
    slot_map_free(&m);

    /* malformed: a range past the last slot, a port that is a string, not an array */
    reply big = r_int(16384);
    const reply *rbad[] = {&a0, &big, &n1};
    reply bad = r_arr(rbad, 3);
    const reply *topbad[] = {&bad};
    reply allbad = r_arr(topbad, 1);
    CHECK(slot_map_parse(&allbad, "h", &m, why, sizeof why) < 0);
    reply sport = r_str("7000");
    const reply *nse[] = {&h1, &sport};
    reply ns = r_arr(nse, 2);
    const reply *rs[] = {&a0, &a1, &ns};
    reply rsr = r_arr(rs, 3);
    const reply *tops[] = {&rsr};
    reply alls = r_arr(tops, 1);
    CHECK(slot_map_parse(&alls, "h", &m, why, sizeof why) < 0);
    CHECK(slot_map_parse(&h1, "h", &m, why, sizeof why) < 0);
    CHECK(slot_map_parse(NULL, "h", &m, why, sizeof why) < 0);
}

static void test_redirects(void)
{
    redirect r;
    CHECK(redirect_parse("MOVED 3999 127.0.0.1:6381", "x", &r) == REDIRECT_MOVED);
    CHECK(r.slot == 3999 && !strcmp(r.to.host, "127.0.0.1") && r.to.port == 6381);
    CHECK(redirect_parse("ASK 3999 10.1.2.3:7002", "x", &r) == REDIRECT_ASK);
    CHECK(r.slot == 3999 && !strcmp(r.to.host, "10.1.2.3") && r.to.port == 7002);
    /* an empty host is the node that answered; an IPv6 literal keeps its colons */
    CHECK(redirect_parse("MOVED 1 :7005", "10.0.0.7", &r) == REDIRECT_MOVED);
    CHECK(!strcmp(r.to.host, "10.0.0.7") && r.to.port == 7005);
    CHECK(redirect_parse("MOVED 2 ::1:7006", "x", &r) == REDIRECT_MOVED);
    CHECK(!strcmp(r.to.host, "::1") && r.to.port == 7006);
    CHECK(redirect_parse("TRYAGAIN Multiple keys request during rehashing of slot", "x", &r) ==
          REDIRECT_TRYAGAIN);
    CHECK(redirect_parse("CLUSTERDOWN The cluster is down", "x", &r) == REDIRECT_CLUSTERDOWN);
    /* the command's own errors, and redirections that do not parse, go to the caller */
    CHECK(redirect_parse("WRONGTYPE Operation against a key", "x", &r) == REDIRECT_NONE);
    CHECK(redirect_parse("MOVED 16384 h:1", "x", &r) == REDIRECT_NONE);
    CHECK(redirect_parse("MOVED x h:1", "x", &r) == REDIRECT_NONE);
    CHECK(redirect_parse("MOVED 1 h:0", "x", &r) == REDIRECT_NONE);
    CHECK(redirect_parse("MOVED 1 h", "x", &r) == REDIRECT_NONE);
    CHECK(redirect_parse("ASKING", "x", &r) == REDIRECT_NONE);
}

static void test_seeds(void)
{
    cluster_seeds s;
    char why[160];
    CHECK(cluster_seeds_parse("127.0.0.1:7000,127.0.0.1:7001", &s, why, sizeof why) == 0);
    CHECK(s.n == 2 && s.addrs[1].port == 7001 && !s.password && !s.user);
    cluster_seeds_free(&s);
    /* credentials as in APPVIEW_VALKEY_URL: the first given serve every node */
    CHECK(cluster_seeds_parse("redis://:s%40cret@h1:1,redis://:other@h2:2,h3:3", &s, why,
                              sizeof why) == 0);
    CHECK(s.n == 3 && !strcmp(s.password, "s@cret") && !s.user && !strcmp(s.addrs[2].host, "h3"));
    cluster_seeds_free(&s);
    CHECK(cluster_seeds_parse("redis://app:pw@[::1]:7000", &s, why, sizeof why) == 0);
    CHECK(!strcmp(s.user, "app") && !strcmp(s.password, "pw") && !strcmp(s.addrs[0].host, "::1"));
    cluster_seeds_free(&s);
    CHECK(cluster_seeds_parse("redis://pw@h:1", &s, why, sizeof why) == 0);
    CHECK(!strcmp(s.password, "pw") && !s.user);
    cluster_seeds_free(&s);
    CHECK(cluster_seeds_parse("h:0", &s, why, sizeof why) < 0);
    CHECK(cluster_seeds_parse("", &s, why, sizeof why) < 0);
    CHECK(cluster_seeds_parse(",,", &s, why, sizeof why) < 0);
    CHECK(cluster_seeds_parse("http://h:1", &s, why, sizeof why) < 0);
    CHECK(cluster_seeds_parse("redis://h:1/0", &s, why, sizeof why) == 0);
    cluster_seeds_free(&s);
    CHECK(cluster_seeds_parse("redis://h:1/3", &s, why, sizeof why) < 0);
    CHECK(cluster_seeds_parse("h 1:2", &s, why, sizeof why) < 0);
}

static void test_wait_enough(void)
{
    CHECK(slot_wait_enough(1, 1, 1));
    CHECK(!slot_wait_enough(0, 1, 1)); /* its replica lags: not safe from a failover */
    CHECK(slot_wait_enough(0, 1, 0));  /* no replica: none that a failover could promote */
    CHECK(slot_wait_enough(1, 2, 1));  /* one of two configured is all there is */
    CHECK(!slot_wait_enough(1, 2, 2));
    CHECK(slot_wait_enough(2, 1, 3)); /* more than asked is fine */
    CHECK(slot_wait_enough(0, 0, 2)); /* nothing asked */
}

int main(void)
{
    RUN(test_crc16_check_value);
    RUN(test_key_slots);
    RUN(test_slot_map);
    RUN(test_redirects);
    RUN(test_seeds);
    RUN(test_wait_enough);
    CHECK_EXIT();
}

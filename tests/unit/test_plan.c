/* The fold's rulebook (appview/plan.c), table-tested without a socket: for each kind of event
 * and each state of the index, the writes it plans, in order, as Valkey commands. */
#include "appview/plan.h"
#include "tests/unit/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DID "did:plc:7iza6de2dwap2sbkpav7c6c6"
#define G1 "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
#define G2 "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
#define MRKEY "3lbbuqg2k36wa"
#define TRKEY "3lbbuqg2lyk3g"
#define AT1 "2025-01-12T23:20:50.123456789Z"
#define AT2 "2025-01-13T10:15:32.5+01:00"
#define BASE "atcr:{" DID "}/"
#define RECENT "atcr:recent"
#define JSON "{\"x\":1}"

static const plan_keys keys = {.base = BASE, .recent_key = RECENT};

/* An event as event_parse makes it: a manifest put (kind 'm') of digest g in repo at `at`, a
 * tag put ('t') of tag `key` to the manifest record target, or a delete ('d'). */
static event make(char kind, const char *collection, const char *rkey, const char *rev,
                  const char *repo, const char *key, const char *at, uint64_t time_us)
{
    event ev = {.kind = EVENT_COMMIT,
                .time_us = time_us,
                .did = DID,
                .collection = collection,
                .rkey = rkey,
                .rev = rev,
                .cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"};
    if (kind == 'd') {
        ev.is_delete = 1;
        return ev;
    }
    ev.is_create = 1;
    ev.record_kind = !strcmp(collection, "io.atcr.manifest") ? RECORD_MANIFEST
                     : !strcmp(collection, "io.atcr.tag")    ? RECORD_TAG
                                                             : RECORD_HOLD_STATS;
    ev.repository = repo;
    ev.key = key;
    ev.at = at;
    ev.created_ms = 1736724050123;
    ev.record_json = JSON;
    ev.record_json_len = strlen(JSON);
    return ev;
}

static event manifest(const char *rkey, const char *rev, const char *repo, const char *g,
                      const char *at)
{
    return make('m', "io.atcr.manifest", rkey, rev, repo, g, at, 1736724050123000);
}

static event tag(const char *rkey, const char *rev, const char *repo, const char *t,
                 const char *target_rkey, const char *target_digest)
{
    event ev = make('t', "io.atcr.tag", rkey, rev, repo, t, AT1, 1736724050123000);
    ev.target_rkey = target_rkey;
    snprintf(ev.target_digest, sizeof ev.target_digest, "%s", target_digest ? target_digest : "");
    return ev;
}

static event del(const char *collection, const char *rkey, const char *rev)
{
    return make('d', collection, rkey, rev, NULL, NULL, NULL, 1736724050123000);
}

/* A state where everything about the DID is known and the record is as given. */
static plan_state known(stored_record cur)
{
    return (plan_state){
        .cur = cur, .gone_known = 1, .max_rev = "3lbbuqg2aaaaa", .history_known = 1};
}

static stored_record absent(void)
{
    return (stored_record){.state = STORED_ABSENT};
}

static stored_record live(char kind, const char *rev, const char *repo, const char *key,
                          const char *at)
{
    stored_record s = {.state = STORED_LIVE, .kind = kind};
    snprintf(s.rev, sizeof s.rev, "%s", rev);
    snprintf(s.repo, sizeof s.repo, "%s", repo);
    snprintf(s.key, sizeof s.key, "%s", key);
    snprintf(s.at, sizeof s.at, "%s", at);
    return s;
}

static stored_record tombstone(const char *rev)
{
    stored_record s = {.state = STORED_TOMBSTONE};
    snprintf(s.rev, sizeof s.rev, "%s", rev);
    return s;
}

/* The plan's ops as commands, one per line: "ZADD key score member", "HSET key field value". */
static char rendered[16384];

static const char *render(const plan *p)
{
    size_t n = 0;
    rendered[0] = 0;
    for (int i = 0; i < p->nops; i++) {
        const plan_op *op = &p->ops[i];
        static const char *const names[] = {"HSET", "ZADD", "ZADD NX", "ZREM"};
        n += (size_t)snprintf(rendered + n, sizeof rendered - n, "%s %s", names[op->kind], op->key);
        if (op->a)
            n += (size_t)snprintf(rendered + n, sizeof rendered - n, " %.*s", (int)op->alen, op->a);
        n += (size_t)snprintf(rendered + n, sizeof rendered - n, " %.*s%.*s\n", (int)op->blen,
                              op->b, (int)op->b2len, op->b2 ? op->b2 : "");
    }
    return rendered;
}

static plan p;

static int plans(const event *ev, const plan_state *st, plan_verdict verdict, const char *want)
{
    plan_record(ev, st, &keys, &p);
    const char *got = render(&p);
    if (p.verdict == verdict && (!want || !strcmp(got, want))) return 1;
    fprintf(stderr, "    verdict %d (want %d)\n    got:\n%s    want:\n%s", p.verdict, verdict, got,
            want ? want : "(any)\n");
    return 0;
}

#define MAN_ZSET BASE "repo/app/manifests"
#define TAG_ZSET BASE "repo/app/tags"
#define HEAD(rev, kind, repo, key, target, at)                                                     \
    rev " " kind " " repo " " key " " target " " at                                                \
        " bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm\n"

static void create_new_manifest_needs_no_read(void)
{
    event ev = manifest(MRKEY, "3lbbuqg2k36wa", "app", G1, AT1);
    plan_state st = known((stored_record){.state = STORED_UNKNOWN});
    CHECK(plans(&ev, &st, PLAN_WRITE,
                "ZADD " MAN_ZSET " 1736724050123 " G1 " " MRKEY "\n"
                "ZADD NX " BASE "repos 1736724050123 app\n"
                "ZADD " RECENT " 1736724050123 " DID " app " G1 " " MRKEY " " AT1 "\n"
                "HSET " BASE "recs io.atcr.manifest/" MRKEY
                " " HEAD("3lbbuqg2k36wa", "m", "app", G1, "-", AT1) JSON
                "\n"
                "HSET " BASE "recs m/app/" G1 " " MRKEY "\n"
                "HSET " BASE "recs r/" MRKEY " app " G1 "\n"
                "HSET " BASE "recs ~rev 3lbbuqg2k36wa\n"));
    CHECK(p.next.state == STORED_LIVE && !strcmp(p.next.at, AT1) && !strcmp(p.next.key, G1));
}

static void what_is_missing_is_asked_for(void)
{
    event ev = manifest(MRKEY, "3lbbuqg2k36wa", "app", G1, AT1);
    plan_state st = {.cur = {.state = STORED_UNKNOWN}};
    CHECK(plans(&ev, &st, PLAN_NEED, ""));
    CHECK(p.need == (NEED_RECORD | NEED_MAX_REV | NEED_GONE));
    /* A create not newer than ~rev may exist already. */
    st = known((stored_record){.state = STORED_UNKNOWN});
    st.max_rev = "3lbbuqg2zzzzz";
    CHECK(plans(&ev, &st, PLAN_NEED, "") && p.need == NEED_RECORD);
    /* Records of unknown history (no ~rev, but records): no create is new. */
    st = known((stored_record){.state = STORED_UNKNOWN});
    st.history_known = 0;
    CHECK(plans(&ev, &st, PLAN_NEED, "") && p.need == NEED_RECORD);
    /* An absent record of a DID whose purge mark is not known. */
    st = known(absent());
    st.gone_known = 0;
    CHECK(plans(&ev, &st, PLAN_NEED, "") && p.need == NEED_GONE);
    CHECK(plan_needs(&ev, &st) == NEED_GONE);
    /* A record from a PDS needs no ~rev and no purge mark. */
    event listed = ev;
    listed.time_us = 0;
    st = (plan_state){.cur = absent()};
    CHECK(plan_needs(&listed, &st) == 0);
}

static void purged_did_ignores_older_commits(void)
{
    event ev = manifest(MRKEY, "3lbbuqg2k36wa", "app", G1, AT1);
    plan_state st = known(absent());
    st.gone = ev.time_us;
    CHECK(plans(&ev, &st, PLAN_STALE, ""));
    st.gone = ev.time_us - 1; /* a commit after the purge */
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL));
}

static void older_and_equal_revs_change_nothing(void)
{
    event ev = manifest(MRKEY, "3lbbuqg2aaaab", "app", G1, AT1);
    plan_state st = known(live('m', "3lbbuqg2k36wa", "app", G1, AT1));
    st.max_rev = "3lbbuqg2k36wa";
    CHECK(plans(&ev, &st, PLAN_STALE, ""));
    st.cur = tombstone("3lbbuqg2k36wa"); /* never resurrected */
    CHECK(plans(&ev, &st, PLAN_STALE, ""));
    event d = del("io.atcr.manifest", MRKEY, "3lbbuqg2aaaab");
    st.cur = live('m', "3lbbuqg2k36wa", "app", G1, AT1);
    CHECK(plans(&d, &st, PLAN_STALE, ""));
    /* The very record again: its P recent entry may be what a crash lost. */
    ev = manifest(MRKEY, "3lbbuqg2k36wa", "app", G1, AT1);
    CHECK(plans(&ev, &st, PLAN_STALE,
                "ZADD " RECENT " 1736724050123 " DID " app " G1 " " MRKEY " " AT1 "\n"));
    /* An old event still raises ~rev when it is the newest the DID saw (apply order). */
    st.max_rev = "3lbbuqg2aaaaa";
    ev = manifest(MRKEY, "3lbbuqg2aaaab", "app", G1, AT1);
    CHECK(plans(&ev, &st, PLAN_STALE, "HSET " BASE "recs ~rev 3lbbuqg2aaaab\n"));
}

static void manifest_moves_and_deletes(void)
{
    /* createdAt changed: its P recent member changes with it; its repository's member moves
     * by the ZADD, and its hints stay as they are. */
    event ev = manifest(MRKEY, "3lbbuqg2zzzzz", "app", G1, AT2);
    plan_state st = known(live('m', "3lbbuqg2k36wa", "app", G1, AT1));
    st.max_rev = "3lbbuqg2zzzzz";
    CHECK(plans(&ev, &st, PLAN_WRITE,
                "ZREM " RECENT " " DID " app " G1 " " MRKEY " " AT1 "\n"
                "ZADD " MAN_ZSET " 1736724050123 " G1 " " MRKEY "\n"
                "ZADD NX " BASE "repos 1736724050123 app\n"
                "ZADD " RECENT " 1736724050123 " DID " app " G1 " " MRKEY " " AT2 "\n"
                "HSET " BASE "recs io.atcr.manifest/" MRKEY
                " " HEAD("3lbbuqg2zzzzz", "m", "app", G1, "-", AT2) JSON "\n"));
    /* Moved to another repository: out of the old one, and its hints name the new place. */
    ev = manifest(MRKEY, "3lbbuqg2zzzzz", "web", G1, AT1);
    CHECK(plans(&ev, &st, PLAN_WRITE,
                "ZREM " MAN_ZSET " " G1 " " MRKEY "\n"
                "ZREM " RECENT " " DID " app " G1 " " MRKEY " " AT1 "\n"
                "ZADD " BASE "repo/web/manifests 1736724050123 " G1 " " MRKEY "\n"
                "ZADD NX " BASE "repos 1736724050123 web\n"
                "ZADD " RECENT " 1736724050123 " DID " web " G1 " " MRKEY " " AT1 "\n"
                "HSET " BASE "recs io.atcr.manifest/" MRKEY
                " " HEAD("3lbbuqg2zzzzz", "m", "web", G1, "-", AT1) JSON
                "\n"
                "HSET " BASE "recs m/web/" G1 " " MRKEY "\n"
                "HSET " BASE "recs r/" MRKEY " web " G1 "\n"));
    /* Updated in place: no removal. */
    ev = manifest(MRKEY, "3lbbuqg2zzzzz", "app", G1, AT1);
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL) && !strstr(rendered, "ZREM"));
    /* Deleted: out of its place, a tombstone left; the hint m/R/G stays. */
    event d = del("io.atcr.manifest", MRKEY, "3lbbuqg2zzzzz");
    CHECK(plans(&d, &st, PLAN_WRITE,
                "ZREM " MAN_ZSET " " G1 " " MRKEY "\n"
                "ZREM " RECENT " " DID " app " G1 " " MRKEY " " AT1 "\n"
                "HSET " BASE "recs io.atcr.manifest/" MRKEY " 3lbbuqg2zzzzz - - - - - -\n"
                "HSET " BASE "recs r/" MRKEY " -\n"));
    CHECK(p.next.state == STORED_TOMBSTONE && !strcmp(p.next.rev, "3lbbuqg2zzzzz"));
    /* A delete of a record never seen leaves its tombstone, so an older create stays out. */
    st.cur = absent();
    CHECK(plans(&d, &st, PLAN_WRITE,
                "HSET " BASE "recs io.atcr.manifest/" MRKEY " 3lbbuqg2zzzzz - - - - - -\n"
                "HSET " BASE "recs r/" MRKEY " -\n"));
}

static void tags_point_at_manifest_records(void)
{
    event ev = tag(TRKEY, "3lbbuqg2zzzzz", "app", "latest", MRKEY, NULL);
    plan_state st = known(absent());
    st.max_rev = "3lbbuqg2zzzzz";
    CHECK(plans(&ev, &st, PLAN_WRITE,
                "ZADD " TAG_ZSET " 1736724050123 latest\n"
                "ZADD NX " BASE "repos 1736724050123 app\n"
                "HSET " BASE "recs io.atcr.tag/" TRKEY
                " " HEAD("3lbbuqg2zzzzz", "t", "app", "latest", MRKEY "=-", AT1) JSON
                "\n"
                "HSET " BASE "recs t/app/latest " TRKEY " " AT1 " " MRKEY "=-\n"));
    /* Only the deprecated digest. */
    ev = tag(TRKEY, "3lbbuqg2zzzzz", "app", "latest", NULL, G2);
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL) &&
          strstr(rendered, "t/app/latest " TRKEY " " AT1 " -=" G2 "\n"));
    ev = tag(TRKEY, "3lbbuqg2zzzzz", "app", "latest", MRKEY, G2);
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL) && strstr(rendered, " " MRKEY "=" G2 "\n"));
}

static void a_tag_leaves_only_its_own_place(void)
{
    /* Re-tagged to another name: the old name goes, if this record is the one it names. */
    event ev = tag(TRKEY, "3lbbuqg2zzzzz", "app", "stable", MRKEY, NULL);
    plan_state st = known(live('t', "3lbbuqg2k36wa", "app", "latest", AT1));
    CHECK(plans(&ev, &st, PLAN_NEED, "") && p.need == NEED_TAG_OWNER);
    st.tag_owner = TRKEY " " AT1 " " MRKEY "=-";
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL) &&
          !strncmp(rendered, "ZREM " TAG_ZSET " latest\nZADD " TAG_ZSET " 1736724050123 stable\n",
                   strlen("ZREM " TAG_ZSET " latest\nZADD " TAG_ZSET " 1736724050123 stable\n")));
    /* The ops own their strings: the state they were planned from may go at once. */
    plan_state copy = st;
    plan_record(&ev, &copy, &keys, &p);
    memset(&copy, 'x', sizeof copy);
    CHECK(strstr(render(&p), "ZREM " TAG_ZSET " latest\n") != NULL);
    /* Another record took the tag since: it stays. */
    st.tag_owner = "3lbbuqg2other " AT1 " " MRKEY "=-";
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL) && !strstr(rendered, "ZREM"));
    event d = del("io.atcr.tag", TRKEY, "3lbbuqg2zzzzz");
    CHECK(plans(&d, &st, PLAN_WRITE,
                "HSET " BASE "recs io.atcr.tag/" TRKEY " 3lbbuqg2zzzzz - - - - - -\n"
                "HSET " BASE "recs ~rev 3lbbuqg2zzzzz\n"));
    /* No hint at all (a prefix flushed under it): nothing to remove. */
    st.tag_owner = "";
    CHECK(plans(&d, &st, PLAN_WRITE, NULL) && !strstr(rendered, "ZREM"));
    st.tag_owner = TRKEY "x " AT1 " -"; /* a longer rkey is another record */
    CHECK(plans(&d, &st, PLAN_WRITE, NULL) && !strstr(rendered, "ZREM"));
}

static void records_from_a_pds(void)
{
    event ev = manifest(MRKEY, "3lbbuqg2zzzzz", "app", G1, AT1);
    ev.time_us = 0;
    ev.is_create = 0;
    plan_state st = {.cur = absent()}; /* no ~rev, no purge mark: neither is needed */
    CHECK(plans(&ev, &st, PLAN_WRITE, NULL) && !strstr(rendered, "~rev"));
    st.cur = live('m', "3lbbuqg2zzzzz", "app", G1, AT1);
    CHECK(plans(&ev, &st, PLAN_STALE, NULL));
}

static void hold_stats_records_are_only_stored(void)
{
    event ev = make('s', "io.atcr.hold.stats", "3lbbuqg2stat1", "3lbbuqg2zzzzz", "app",
                    "did:plc:user", AT1, 1736724050123000);
    plan_state st = known(absent());
    CHECK(plans(&ev, &st, PLAN_WRITE,
                "HSET " BASE "recs io.atcr.hold.stats/3lbbuqg2stat1 " HEAD(
                    "3lbbuqg2zzzzz", "s", "app", "did:plc:user", "-", AT1) JSON
                "\n"
                "HSET " BASE "recs ~rev 3lbbuqg2zzzzz\n"));
}

static void keys_that_do_not_fit_plan_nothing(void)
{
    static char huge[PLAN_TEXT_MAX + 10];
    memset(huge, 'a', sizeof huge - 1);
    event ev = manifest(MRKEY, "3lbbuqg2zzzzz", huge, G1, AT1);
    plan_state st = known(absent());
    CHECK(plans(&ev, &st, PLAN_ERROR, ""));
}

static void stored_headers(void)
{
    stored_record s;
    const char v[] = HEAD("3lbbuqg2zzzzz", "t", "app", "latest", MRKEY "=-", AT2) JSON;
    CHECK(plan_parse_stored(v, strlen(v), &s) == 0 && s.state == STORED_LIVE && s.kind == 't' &&
          !strcmp(s.rev, "3lbbuqg2zzzzz") && !strcmp(s.repo, "app") && !strcmp(s.key, "latest") &&
          !strcmp(s.at, AT2));
    const char t[] = "3lbbuqg2zzzzz - - - - - -";
    CHECK(plan_parse_stored(t, strlen(t), &s) == 0 && s.state == STORED_TOMBSTONE &&
          !strcmp(s.rev, "3lbbuqg2zzzzz"));
    const char *bad[] = {"", "3lbbuqg2zzzzz", "3lbbuqg2zzzzz x app latest - - -\n{}",
                         "3lbbuqg2zzzzz m app\n{}", "3lbbuqg2zzzzz m app " G1 " - " AT1 " cid"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(plan_parse_stored(bad[i], strlen(bad[i]), &s) < 0);
}

int main(void)
{
    RUN(create_new_manifest_needs_no_read);
    RUN(what_is_missing_is_asked_for);
    RUN(purged_did_ignores_older_commits);
    RUN(older_and_equal_revs_change_nothing);
    RUN(manifest_moves_and_deletes);
    RUN(tags_point_at_manifest_records);
    RUN(a_tag_leaves_only_its_own_place);
    RUN(records_from_a_pds);
    RUN(hold_stats_records_are_only_stored);
    RUN(keys_that_do_not_fit_plan_nothing);
    RUN(stored_headers);
    CHECK_EXIT();
}

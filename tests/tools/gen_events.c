/* Writes synthetic Jetstream v1 events as JSONL, for the ingest benchmark and load tests.
 *
 *   gen_events [-n EVENTS] [--seed S] [--atcr-percent P] [--dids D] [--rkeys tid|digest]
 *              [-o FILE]
 *
 * Mix (defaults): 10% io.atcr.* commits (manifest and tag creates, updates, deletes over D
 * DIDs, each with a few repositories; manifests keyed by TIDs as the lexicon says, tags naming
 * them by at-uri, one in eight with the deprecated manifestDigest too), about 0.3% identity and
 * account events, the rest app.bsky.* likes, posts, follows and reposts in roughly the network's
 * proportions and sizes (about 420 bytes a line on average). time_us increases strictly; every rev
 * is a valid TID increasing per DID; the same seed gives the same file. A summary line goes to
 * stderr: events=N atcr=M identity=I account=A.
 *
 * --rkeys digest keys manifests by their digest's hex instead, the layout older ATCR writers
 * used and older appviews required: the same stream, records every appview since schema 1 can
 * index, for benchmarks that compare one with another. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LIVE 16
#define OTHER_DIDS 200000

static const char b32sort[] = "234567abcdefghijklmnopqrstuvwxyz";
static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char *const repos[] = {"app",     "web",       "api",     "worker",   "db",
                                    "cache",   "tools",     "base",    "ml-train", "frontend",
                                    "gateway", "scheduler", "ingest",  "docs",     "proxy",
                                    "builder", "runner",    "metrics", "auth",     "search"};
static const char *const tags[] = {"latest", "main", "v1.0.0",  "v1.1.0", "v2.0.0-rc1",
                                   "stable", "dev",  "nightly", "v1",     "edge"};
static const char *const words[] = {
    "the",     "registry", "image",   "pushed",  "today", "container", "build",  "release",
    "finally", "works",    "with",    "atproto", "a",     "new",       "layer",  "fast",
    "cache",   "tiny",     "rootfs",  "deploy",  "on",    "my",        "server", "and",
    "it",      "is",       "running", "smooth",  "again", "coffee",    "first",  "weekend"};

#define NREPOS (sizeof repos / sizeof repos[0])
#define NTAGS (sizeof tags / sizeof tags[0])
#define NWORDS (sizeof words / sizeof words[0])

struct manifest {
    char hex[65];
    char rkey[65]; /* a TID, or with --rkeys digest the hex */
    uint8_t repo;
};

struct tag {
    uint8_t repo, name;
    struct manifest to;
};

struct did_state {
    struct manifest m[MAX_LIVE];
    struct tag t[MAX_LIVE];
    uint8_t nm, nt, nrepos, repo0;
    uint16_t clock;
    bool dead;
};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static FILE *out;
static bool digest_rkeys; /* --rkeys digest */
static uint64_t now_us = 1732000000000000ull, seq = 4000000000ull;
static uint64_t n_atcr, n_identity, n_account;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* did:plc: plus 24 base32 characters derived from n, so DID n is the same in every run. */
static void did_of(uint64_t n, char out_did[33])
{
    memcpy(out_did, "did:plc:", 8);
    uint64_t a = mix(n), b = mix(n ^ 0xABCDEF);
    for (int i = 0; i < 24; i++) {
        uint64_t *src = i < 12 ? &a : &b;
        out_did[8 + i] = b32[*src & 31];
        *src >>= 5;
    }
    out_did[32] = 0;
}

static void tid(uint64_t us, unsigned clock, char o[14])
{
    uint64_t v = (us << 10 | (clock & 1023)) & 0x7FFFFFFFFFFFFFFFull;
    for (int i = 12; i >= 0; i--, v >>= 5)
        o[i] = b32sort[v & 31];
    o[13] = 0;
}

static void cid(char o[60])
{
    memcpy(o, "bafyrei", 7);
    for (int i = 7; i < 59; i++)
        o[i] = b32[rnd() & 31];
    o[59] = 0;
}

static void hex64(char o[65])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 64; i++)
        o[i] = hx[rnd() & 15];
    o[64] = 0;
}

static void iso(uint64_t us, char o[32])
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(o, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(o + n, 32 - n, ".%03uZ", (unsigned)(us / 1000 % 1000));
}

static void commit_head(const char *did, unsigned clock, const char *op, const char *coll,
                        const char *rkey)
{
    char rev[14];
    tid(now_us, clock, rev);
    fprintf(out,
            "{\"did\":\"%s\",\"time_us\":%" PRIu64
            ",\"kind\":\"commit\",\"commit\":{\"rev\":\"%s\","
            "\"operation\":\"%s\",\"collection\":\"%s\",\"rkey\":\"%s\"",
            did, now_us, rev, op, coll, rkey);
}

static void commit_tail(bool with_cid)
{
    char c[60];
    if (with_cid) {
        cid(c);
        fprintf(out, ",\"cid\":\"%s\"}}\n", c);
    } else {
        fputs("}}\n", out);
    }
}

static void manifest_record(const struct manifest *m, unsigned hold)
{
    char when[32], cfgd[65], ld[65];
    iso(now_us, when);
    hex64(cfgd);
    fprintf(out,
            ",\"record\":{\"$type\":\"io.atcr.manifest\",\"repository\":\"%s\",\"digest\":"
            "\"sha256:%s\",\"holdDid\":\"did:web:hold%02u.atcr.io\",\"mediaType\":"
            "\"application/vnd.oci.image.manifest.v1+json\",\"schemaVersion\":2,\"config\":{"
            "\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"size\":%u,\"digest\":"
            "\"sha256:%s\"},\"layers\":[",
            repos[m->repo], m->hex, hold, 1000 + (unsigned)(rnd() % 9000), cfgd);
    unsigned nl = 1 + (unsigned)(rnd() % 3);
    for (unsigned i = 0; i < nl; i++) {
        hex64(ld);
        fprintf(out,
                "%s{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"size\":%u,"
                "\"digest\":\"sha256:%s\"}",
                i ? "," : "", 10000 + (unsigned)(rnd() % 90000000), ld);
    }
    fprintf(out, "],\"createdAt\":\"%s\"}", when);
}

static void tag_record(const char *did, const struct tag *t)
{
    char when[32];
    iso(now_us, when);
    fprintf(out,
            ",\"record\":{\"$type\":\"io.atcr.tag\",\"repository\":\"%s\",\"tag\":\"%s\","
            "\"manifest\":\"at://%s/io.atcr.manifest/%s\",",
            repos[t->repo], tags[t->name], did, t->to.rkey);
    if (rnd() % 8 == 0) fprintf(out, "\"manifestDigest\":\"sha256:%s\",", t->to.hex);
    fprintf(out, "\"createdAt\":\"%s\"}", when);
}

static void tag_rkey(const struct tag *t, char o[64])
{
    snprintf(o, 64, "%s_%s", repos[t->repo], tags[t->name]);
}

static void manifest_create(const char *did, struct did_state *s)
{
    struct manifest m;
    hex64(m.hex);
    if (digest_rkeys)
        memcpy(m.rkey, m.hex, sizeof m.hex);
    else
        tid(now_us, s->clock, m.rkey);
    m.repo = (uint8_t)((s->repo0 + rnd() % s->nrepos) % NREPOS);
    commit_head(did, s->clock, "create", "io.atcr.manifest", m.rkey);
    manifest_record(&m, (unsigned)(rnd() % 4));
    commit_tail(true);
    if (s->nm < MAX_LIVE)
        s->m[s->nm++] = m;
    else
        s->m[rnd() % MAX_LIVE] = m; /* forget one: it stays live, just never touched again */
}

static void atcr_event(const char *did, struct did_state *s)
{
    unsigned r = (unsigned)(rnd() % 100);
    char rkey[64];
    n_atcr++;
    if (s->nm == 0 || r < 45) {
        manifest_create(did, s);
    } else if (r < 75) {
        const struct manifest *m = &s->m[rnd() % s->nm];
        struct tag t = {.repo = m->repo, .name = (uint8_t)(rnd() % NTAGS), .to = *m};
        int found = -1;
        for (int i = 0; i < s->nt; i++)
            if (s->t[i].repo == t.repo && s->t[i].name == t.name) found = i;
        tag_rkey(&t, rkey);
        commit_head(did, s->clock, found >= 0 ? "update" : "create", "io.atcr.tag", rkey);
        tag_record(did, &t);
        commit_tail(true);
        if (found >= 0)
            s->t[found] = t;
        else if (s->nt < MAX_LIVE)
            s->t[s->nt++] = t;
    } else if (r < 85) {
        const struct manifest *m = &s->m[rnd() % s->nm];
        commit_head(did, s->clock, "update", "io.atcr.manifest", m->rkey);
        manifest_record(m, 4 + (unsigned)(rnd() % 4));
        commit_tail(true);
    } else if (r < 95 || s->nt == 0) {
        unsigned i = (unsigned)(rnd() % s->nm);
        commit_head(did, s->clock, "delete", "io.atcr.manifest", s->m[i].rkey);
        commit_tail(false);
        s->m[i] = s->m[--s->nm];
    } else {
        unsigned i = (unsigned)(rnd() % s->nt);
        tag_rkey(&s->t[i], rkey);
        commit_head(did, s->clock, "delete", "io.atcr.tag", rkey);
        commit_tail(false);
        s->t[i] = s->t[--s->nt];
    }
}

static void other_event(void)
{
    char did[33], rkey[14], subject[33], stid[14], scid[60], when[32];
    uint64_t n = 1000000 + rnd() % OTHER_DIDS;
    did_of(n, did);
    tid(now_us, (unsigned)(n & 1023), rkey);
    unsigned r = (unsigned)(rnd() % 100);
    const char *coll = r < 20   ? "app.bsky.feed.post"
                       : r < 75 ? "app.bsky.feed.like"
                       : r < 90 ? "app.bsky.graph.follow"
                                : "app.bsky.feed.repost";
    if (rnd() % 100 < 5) {
        commit_head(did, (unsigned)(n & 1023), "delete", coll, rkey);
        commit_tail(false);
        return;
    }
    commit_head(did, (unsigned)(n & 1023), "create", coll, rkey);
    iso(now_us, when);
    if (r < 20) {
        fprintf(out,
                ",\"record\":{\"$type\":\"%s\",\"createdAt\":\"%s\",\"langs\":[\"en\"],\"text\":\"",
                coll, when);
        unsigned nw = 4 + (unsigned)(rnd() % 28);
        for (unsigned i = 0; i < nw; i++)
            fprintf(out, "%s%s", i ? " " : "", words[rnd() % NWORDS]);
        fputs("\"}", out);
    } else {
        did_of(1000000 + rnd() % OTHER_DIDS, subject);
        if (r < 75 || r >= 90) {
            tid(now_us - rnd() % 100000000000ull, 7, stid);
            cid(scid);
            fprintf(
                out,
                ",\"record\":{\"$type\":\"%s\",\"createdAt\":\"%s\",\"subject\":{\"cid\":\"%s\","
                "\"uri\":\"at://%s/app.bsky.feed.post/%s\"}}",
                coll, when, scid, subject, stid);
        } else {
            fprintf(out, ",\"record\":{\"$type\":\"%s\",\"createdAt\":\"%s\",\"subject\":\"%s\"}",
                    coll, when, subject);
        }
    }
    commit_tail(true);
}

static void identity_event(const char *did, uint64_t n)
{
    char when[32];
    iso(now_us, when);
    n_identity++;
    fprintf(out,
            "{\"did\":\"%s\",\"time_us\":%" PRIu64 ",\"kind\":\"identity\",\"identity\":{\"did\":"
            "\"%s\",\"handle\":\"user%" PRIu64 "-%u.bsky.social\",\"seq\":%" PRIu64
            ",\"time\":\"%s\"}}\n",
            did, now_us, did, n, (unsigned)(rnd() % 100), seq++, when);
}

static void account_event(const char *did, const char *status)
{
    char when[32];
    iso(now_us, when);
    n_account++;
    fprintf(out,
            "{\"did\":\"%s\",\"time_us\":%" PRIu64 ",\"kind\":\"account\",\"account\":{\"active\":"
            "false,\"did\":\"%s\",\"seq\":%" PRIu64 ",\"status\":\"%s\",\"time\":\"%s\"}}\n",
            did, now_us, did, seq++, status, when);
}

int main(int argc, char **argv)
{
    uint64_t n = 1000000, seed = 1, ndids = 3000;
    unsigned atcr_pct = 10;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: gen_events [-n EVENTS] [--seed S] [--atcr-percent P] "
                            "[--dids D] [--rkeys tid|digest] [-o FILE]\n");
            return 2;
        }
        if (strcmp(a, "-n") == 0)
            n = strtoull(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--atcr-percent") == 0)
            atcr_pct = (unsigned)atoi(v);
        else if (strcmp(a, "--dids") == 0)
            ndids = strtoull(v, NULL, 10);
        else if (strcmp(a, "-o") == 0)
            path = v;
        else if (strcmp(a, "--rkeys") == 0 && (!strcmp(v, "tid") || !strcmp(v, "digest")))
            digest_rkeys = !strcmp(v, "digest");
        else if (strcmp(a, "--rkeys") == 0) {
            fprintf(stderr, "gen_events: --rkeys takes tid or digest\n");
            return 2;
        } else {
            fprintf(stderr, "gen_events: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (ndids == 0 || atcr_pct > 100) {
        fprintf(stderr, "gen_events: --dids must be > 0 and --atcr-percent <= 100\n");
        return 2;
    }
    rng_state = mix(seed) | 1;
    out = path ? fopen(path, "w") : stdout;
    if (!out) {
        perror(path);
        return 1;
    }
    static char obuf[1 << 20];
    setvbuf(out, obuf, _IOFBF, sizeof obuf);
    struct did_state *dids = calloc(ndids, sizeof *dids);
    if (!dids) return 1;
    for (uint64_t i = 0; i < ndids; i++) {
        dids[i].clock = (uint16_t)(mix(i) & 1023);
        dids[i].nrepos = (uint8_t)(1 + mix(i + 7) % 3);
        dids[i].repo0 = (uint8_t)(mix(i + 13) % NREPOS);
    }
    char did[33];
    uint64_t atcr_threshold = (uint64_t)atcr_pct * 100;
    for (uint64_t i = 0; i < n; i++) {
        now_us += 1 + rnd() % 40;
        uint64_t r = rnd() % 10000;
        if (r < 25) {
            bool ours = r % 5 == 0;
            uint64_t k = ours ? rnd() % ndids : 1000000 + rnd() % OTHER_DIDS;
            did_of(k, did);
            if (r < 20)
                identity_event(did, k);
            else if (ours && !dids[k].dead) {
                dids[k].dead = true;
                account_event(did, r % 2 ? "takendown" : "deleted");
            } else {
                account_event(did, "deactivated");
            }
        } else if (r < 25 + atcr_threshold) {
            uint64_t k = rnd() % ndids;
            for (uint64_t tries = 0; dids[k].dead && tries < ndids; tries++)
                k = (k + 1) % ndids;
            if (dids[k].dead) {
                other_event();
                continue;
            }
            did_of(k, did);
            atcr_event(did, &dids[k]);
        } else {
            other_event();
        }
    }
    free(dids);
    if (fflush(out) != 0 || (path && fclose(out) != 0)) {
        perror("gen_events: write");
        return 1;
    }
    fprintf(stderr,
            "events=%" PRIu64 " atcr=%" PRIu64 " identity=%" PRIu64 " account=%" PRIu64 "\n", n,
            n_atcr, n_identity, n_account);
    return 0;
}

/* Lexicon documents compiled to a tree of `struct type`; see lexicon.h for what is checked. All
 * schema memory belongs to the set (one list of allocations freed together); validation
 * allocates nothing and reports the first problem with its path. */
#include "atproto/lexicon.h"

#include "atproto/syntax.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum kind {
    K_BOOLEAN,
    K_INTEGER,
    K_STRING,
    K_BYTES,
    K_CID_LINK,
    K_BLOB,
    K_ARRAY,
    K_OBJECT,
    K_REF,
    K_UNION,
    K_UNKNOWN,
    K_TOKEN,
    K_RECORD,
    K_METHOD,
};

enum format {
    F_NONE,
    F_DID,
    F_HANDLE,
    F_NSID,
    F_AT_URI,
    F_DATETIME,
    F_CID,
    F_URI,
    F_AT_IDENTIFIER,
    F_RECORD_KEY,
    F_TID,
    F_LANGUAGE,
};

static const char *const format_names[] = {
    [F_DID] = "did",
    [F_HANDLE] = "handle",
    [F_NSID] = "nsid",
    [F_AT_URI] = "at-uri",
    [F_DATETIME] = "datetime",
    [F_CID] = "cid",
    [F_URI] = "uri",
    [F_AT_IDENTIFIER] = "at-identifier",
    [F_RECORD_KEY] = "record-key",
    [F_TID] = "tid",
    [F_LANGUAGE] = "language",
};

struct type;

struct prop {
    const char *name;
    size_t name_len;
    struct type *type;
    bool required;
    bool nullable;
};

struct str_list {
    const char **items;
    size_t *lens;
    size_t n;
};

struct type {
    enum kind kind;
    enum format format;
    long long min_len, max_len; /* strings: UTF-8 bytes; arrays: items; bytes: decoded; -1: none */
    long long min_graphemes, max_graphemes;
    bool has_min, has_max;
    json_int_t min, max;
    struct str_list str_enum;
    json_int_t *int_enum;
    size_t n_int_enum;
    const char *const_str;
    size_t const_str_len;
    bool has_const_int;
    json_int_t const_int;
    int const_bool; /* -1: none */
    struct type *items;
    struct prop *props;
    size_t n_props, n_required;
    const char *ref; /* normalized "nsid" or "nsid#name" until resolved into target */
    struct type *target;
    struct str_list union_refs;
    struct type **union_targets;
    bool closed;
    struct type *record;
};

struct def {
    const char *fqn; /* "nsid" for main, "nsid#name" otherwise */
    struct type *type;
};

struct lexicon_set {
    void **allocs;
    size_t n_allocs, cap_allocs;
    struct def *defs;
    size_t n_defs, cap_defs;
    struct type **pending; /* refs and unions to resolve once every document is loaded */
    size_t n_pending, cap_pending;
    size_t n_docs;
};

/* ---- load-time memory: everything hangs off the set ---- */

static void *set_alloc(lexicon_set *s, size_t n)
{
    if (s->n_allocs == s->cap_allocs) {
        size_t cap = s->cap_allocs ? s->cap_allocs * 2 : 64;
        void **a = realloc(s->allocs, cap * sizeof *a);
        if (!a) return NULL;
        s->allocs = a, s->cap_allocs = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p) s->allocs[s->n_allocs++] = p;
    return p;
}

static char *set_strndup(lexicon_set *s, const char *str, size_t n)
{
    char *p = set_alloc(s, n + 1);
    if (p) memcpy(p, str, n);
    return p;
}

static bool grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return true;
    size_t c = *cap ? *cap * 2 : 32;
    void *a = realloc(*arr, c * elem);
    if (!a) return false;
    *arr = a, *cap = c;
    return true;
}

void lexicon_free(lexicon_set *set)
{
    if (!set) return;
    for (size_t i = 0; i < set->n_allocs; i++)
        free(set->allocs[i]);
    free(set->allocs);
    free(set->defs);
    free(set->pending);
    free(set);
}

/* ---- compiling one document ---- */

struct loader {
    lexicon_set *set;
    const char *doc_id;
    const char *file;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 3, 4))) static struct type *
load_fail(struct loader *L, const char *where, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(L->err, L->errlen, "%s: %s: %s", L->file, where, msg);
    return NULL;
}

static struct type *compile(struct loader *L, const json_t *j, const char *where);

/* "#name" -> "doc#name"; "nsid#main" -> "nsid". */
static const char *normalize_ref(struct loader *L, const char *ref)
{
    char buf[600];
    if (ref[0] == '#')
        snprintf(buf, sizeof buf, "%s%s", L->doc_id, ref);
    else
        snprintf(buf, sizeof buf, "%s", ref);
    size_t n = strlen(buf);
    if (n > 5 && strcmp(buf + n - 5, "#main") == 0) n -= 5;
    return set_strndup(L->set, buf, n);
}

static bool get_len(struct loader *L, const json_t *j, const char *key, long long *out,
                    const char *where)
{
    const json_t *v = json_object_get(j, key);
    *out = -1;
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        load_fail(L, where, "%s must be a non-negative integer", key);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

static bool get_str_list(struct loader *L, const json_t *arr, struct str_list *out,
                         const char *where, const char *what)
{
    if (!json_is_array(arr)) {
        load_fail(L, where, "%s must be an array of strings", what);
        return false;
    }
    out->n = json_array_size(arr);
    out->items = set_alloc(L->set, out->n * sizeof *out->items);
    out->lens = set_alloc(L->set, out->n * sizeof *out->lens);
    if (!out->items || !out->lens) {
        load_fail(L, where, "out of memory");
        return false;
    }
    for (size_t i = 0; i < out->n; i++) {
        const json_t *e = json_array_get(arr, i);
        if (!json_is_string(e)) {
            load_fail(L, where, "%s must be an array of strings", what);
            return false;
        }
        out->lens[i] = json_string_length(e);
        out->items[i] = set_strndup(L->set, json_string_value(e), out->lens[i]);
        if (!out->items[i]) {
            load_fail(L, where, "out of memory");
            return false;
        }
    }
    return true;
}

static bool str_list_has(const struct str_list *l, const char *s, size_t n)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->lens[i] == n && memcmp(l->items[i], s, n) == 0) return true;
    return false;
}

static bool add_pending(struct loader *L, struct type *t)
{
    lexicon_set *s = L->set;
    if (!grow((void **)&s->pending, &s->cap_pending, s->n_pending, sizeof *s->pending))
        return false;
    s->pending[s->n_pending++] = t;
    return true;
}

static bool compile_string(struct loader *L, const json_t *j, struct type *t, const char *where)
{
    const json_t *f = json_object_get(j, "format");
    if (f) {
        const char *name = json_string_value(f);
        for (size_t i = 1; name && i < sizeof format_names / sizeof *format_names; i++)
            if (strcmp(name, format_names[i]) == 0) t->format = (enum format)i;
        if (t->format == F_NONE) {
            load_fail(L, where, "unknown string format");
            return false;
        }
    }
    if (!get_len(L, j, "minLength", &t->min_len, where) ||
        !get_len(L, j, "maxLength", &t->max_len, where) ||
        !get_len(L, j, "minGraphemes", &t->min_graphemes, where) ||
        !get_len(L, j, "maxGraphemes", &t->max_graphemes, where))
        return false;
    const json_t *e = json_object_get(j, "enum");
    if (e && !get_str_list(L, e, &t->str_enum, where, "enum")) return false;
    const json_t *c = json_object_get(j, "const");
    if (c) {
        if (!json_is_string(c)) {
            load_fail(L, where, "const must be a string");
            return false;
        }
        t->const_str_len = json_string_length(c);
        t->const_str = set_strndup(L->set, json_string_value(c), t->const_str_len);
        if (!t->const_str) return false;
    }
    return true;
}

static bool compile_integer(struct loader *L, const json_t *j, struct type *t, const char *where)
{
    const json_t *v;
    if ((v = json_object_get(j, "minimum"))) {
        if (!json_is_integer(v)) return load_fail(L, where, "minimum must be an integer"), false;
        t->has_min = true, t->min = json_integer_value(v);
    }
    if ((v = json_object_get(j, "maximum"))) {
        if (!json_is_integer(v)) return load_fail(L, where, "maximum must be an integer"), false;
        t->has_max = true, t->max = json_integer_value(v);
    }
    if ((v = json_object_get(j, "const"))) {
        if (!json_is_integer(v)) return load_fail(L, where, "const must be an integer"), false;
        t->has_const_int = true, t->const_int = json_integer_value(v);
    }
    if ((v = json_object_get(j, "enum"))) {
        if (!json_is_array(v))
            return load_fail(L, where, "enum must be an array of integers"), false;
        t->n_int_enum = json_array_size(v);
        t->int_enum = set_alloc(L->set, t->n_int_enum * sizeof *t->int_enum);
        if (!t->int_enum) return load_fail(L, where, "out of memory"), false;
        for (size_t i = 0; i < t->n_int_enum; i++) {
            const json_t *e = json_array_get(v, i);
            if (!json_is_integer(e))
                return load_fail(L, where, "enum must be an array of integers"), false;
            t->int_enum[i] = json_integer_value(e);
        }
    }
    return true;
}

static bool compile_object(struct loader *L, const json_t *j, struct type *t, const char *where)
{
    const json_t *props = json_object_get(j, "properties");
    if (props && !json_is_object(props))
        return load_fail(L, where, "properties must be an object"), false;
    t->n_props = props ? json_object_size(props) : 0;
    t->props = set_alloc(L->set, t->n_props * sizeof *t->props);
    if (!t->props) return load_fail(L, where, "out of memory"), false;
    size_t i = 0;
    const char *key;
    const json_t *val;
    char sub[512];
    json_object_foreach((json_t *)props, key, val)
    {
        snprintf(sub, sizeof sub, "%s.%s", where, key);
        t->props[i].name_len = strlen(key);
        t->props[i].name = set_strndup(L->set, key, t->props[i].name_len);
        t->props[i].type = compile(L, val, sub);
        if (!t->props[i].name || !t->props[i].type) return false;
        i++;
    }
    struct str_list req = {0}, nullable = {0};
    const json_t *r = json_object_get(j, "required");
    if (r && !get_str_list(L, r, &req, where, "required")) return false;
    const json_t *nl = json_object_get(j, "nullable");
    if (nl && !get_str_list(L, nl, &nullable, where, "nullable")) return false;
    for (size_t k = 0; k < req.n; k++) {
        bool found = false;
        for (i = 0; i < t->n_props; i++)
            if (strcmp(t->props[i].name, req.items[k]) == 0) t->props[i].required = found = true;
        if (!found)
            return load_fail(L, where, "required field '%s' is not a property", req.items[k]),
                   false;
    }
    for (i = 0; i < t->n_props; i++) {
        t->props[i].nullable = str_list_has(&nullable, t->props[i].name, t->props[i].name_len);
        t->n_required += t->props[i].required; /* a name listed twice is one property */
    }
    return true;
}

/* A method's parameters and bodies are compiled too, so a broken ref in them fails the load. */
static bool compile_method(struct loader *L, const json_t *j, const char *where)
{
    static const char *const parts[] = {"input", "output", "message"};
    char sub[512];
    const json_t *p = json_object_get(j, "parameters");
    if (p) {
        snprintf(sub, sizeof sub, "%s.parameters", where);
        if (!compile(L, p, sub)) return false;
    }
    for (size_t i = 0; i < 3; i++) {
        const json_t *body = json_object_get(j, parts[i]);
        const json_t *schema = body ? json_object_get(body, "schema") : NULL;
        if (!schema) continue;
        snprintf(sub, sizeof sub, "%s.%s.schema", where, parts[i]);
        if (!compile(L, schema, sub)) return false;
    }
    return true;
}

static struct type *compile(struct loader *L, const json_t *j, const char *where)
{
    if (!json_is_object(j)) return load_fail(L, where, "a definition must be an object");
    const char *ty = json_string_value(json_object_get(j, "type"));
    if (!ty) return load_fail(L, where, "missing \"type\"");
    struct type *t = set_alloc(L->set, sizeof *t);
    if (!t) return load_fail(L, where, "out of memory");
    t->min_len = t->max_len = t->min_graphemes = t->max_graphemes = -1;
    t->const_bool = -1;
    char sub[512];
    if (strcmp(ty, "boolean") == 0) {
        t->kind = K_BOOLEAN;
        const json_t *c = json_object_get(j, "const");
        if (c) t->const_bool = json_is_true(c);
    } else if (strcmp(ty, "integer") == 0) {
        t->kind = K_INTEGER;
        if (!compile_integer(L, j, t, where)) return NULL;
    } else if (strcmp(ty, "string") == 0) {
        t->kind = K_STRING;
        if (!compile_string(L, j, t, where)) return NULL;
    } else if (strcmp(ty, "bytes") == 0) {
        t->kind = K_BYTES;
        if (!get_len(L, j, "minLength", &t->min_len, where) ||
            !get_len(L, j, "maxLength", &t->max_len, where))
            return NULL;
    } else if (strcmp(ty, "cid-link") == 0) {
        t->kind = K_CID_LINK;
    } else if (strcmp(ty, "blob") == 0) {
        t->kind = K_BLOB;
    } else if (strcmp(ty, "unknown") == 0) {
        t->kind = K_UNKNOWN;
    } else if (strcmp(ty, "token") == 0) {
        t->kind = K_TOKEN;
    } else if (strcmp(ty, "array") == 0) {
        t->kind = K_ARRAY;
        snprintf(sub, sizeof sub, "%s.items", where);
        if (!get_len(L, j, "minLength", &t->min_len, where) ||
            !get_len(L, j, "maxLength", &t->max_len, where) ||
            !(t->items = compile(L, json_object_get(j, "items"), sub)))
            return NULL;
    } else if (strcmp(ty, "object") == 0 || strcmp(ty, "params") == 0) {
        t->kind = K_OBJECT;
        if (!compile_object(L, j, t, where)) return NULL;
    } else if (strcmp(ty, "ref") == 0) {
        t->kind = K_REF;
        const char *ref = json_string_value(json_object_get(j, "ref"));
        if (!ref) return load_fail(L, where, "ref must be a string");
        if (!(t->ref = normalize_ref(L, ref)) || !add_pending(L, t))
            return load_fail(L, where, "out of memory");
    } else if (strcmp(ty, "union") == 0) {
        t->kind = K_UNION;
        if (!get_str_list(L, json_object_get(j, "refs"), &t->union_refs, where, "refs"))
            return NULL;
        for (size_t i = 0; i < t->union_refs.n; i++) {
            t->union_refs.items[i] = normalize_ref(L, t->union_refs.items[i]);
            if (!t->union_refs.items[i]) return load_fail(L, where, "out of memory");
            t->union_refs.lens[i] = strlen(t->union_refs.items[i]);
        }
        t->union_targets = set_alloc(L->set, t->union_refs.n * sizeof *t->union_targets);
        t->closed = json_is_true(json_object_get(j, "closed"));
        if (!t->union_targets || !add_pending(L, t)) return load_fail(L, where, "out of memory");
    } else if (strcmp(ty, "record") == 0) {
        t->kind = K_RECORD;
        const char *key = json_string_value(json_object_get(j, "key"));
        if (!key || !(strcmp(key, "tid") == 0 || strcmp(key, "any") == 0 ||
                      strcmp(key, "nsid") == 0 || strncmp(key, "literal:", 8) == 0))
            return load_fail(L, where, "record key must be tid, any, nsid or literal:*");
        snprintf(sub, sizeof sub, "%s.record", where);
        const json_t *rec = json_object_get(j, "record");
        const char *rty = json_string_value(json_object_get(rec, "type"));
        if (!rty || strcmp(rty, "object") != 0)
            return load_fail(L, where, "record must be an object definition");
        if (!(t->record = compile(L, rec, sub))) return NULL;
    } else if (strcmp(ty, "query") == 0 || strcmp(ty, "procedure") == 0 ||
               strcmp(ty, "subscription") == 0) {
        t->kind = K_METHOD;
        if (!compile_method(L, j, where)) return NULL;
    } else {
        return load_fail(L, where, "unknown type \"%s\"", ty);
    }
    return t;
}

static bool add_def(struct loader *L, const char *name, struct type *t)
{
    lexicon_set *s = L->set;
    char buf[600];
    if (strcmp(name, "main") == 0)
        snprintf(buf, sizeof buf, "%s", L->doc_id);
    else
        snprintf(buf, sizeof buf, "%s#%s", L->doc_id, name);
    for (size_t i = 0; i < s->n_defs; i++)
        if (strcmp(s->defs[i].fqn, buf) == 0) return load_fail(L, buf, "defined twice"), false;
    if (!grow((void **)&s->defs, &s->cap_defs, s->n_defs, sizeof *s->defs))
        return load_fail(L, buf, "out of memory"), false;
    const char *fqn = set_strndup(s, buf, strlen(buf));
    if (!fqn) return load_fail(L, buf, "out of memory"), false;
    s->defs[s->n_defs++] = (struct def){fqn, t};
    return true;
}

static bool load_doc(lexicon_set *set, const char *file, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(err, errlen, "%s:%d: %s", file, jerr.line, jerr.text);
        return false;
    }
    struct loader L = {set, NULL, file, err, errlen};
    bool ok = false;
    const json_t *version = json_object_get(doc, "lexicon");
    const json_t *id = json_object_get(doc, "id");
    const json_t *defs = json_object_get(doc, "defs");
    if (!json_is_integer(version) || json_integer_value(version) != 1) {
        load_fail(&L, "lexicon", "must be 1");
    } else if (!json_is_string(id) || !atp_is_nsid(json_string_value(id), json_string_length(id))) {
        load_fail(&L, "id", "must be an NSID");
    } else if (!json_is_object(defs) || json_object_size(defs) == 0) {
        load_fail(&L, "defs", "must be a non-empty object");
    } else {
        L.doc_id = set_strndup(set, json_string_value(id), json_string_length(id));
        ok = L.doc_id != NULL;
        const char *name;
        const json_t *def;
        json_object_foreach((json_t *)defs, name, def)
        {
            if (!ok) break;
            char where[300];
            snprintf(where, sizeof where, "defs.%s", name);
            struct type *t = compile(&L, def, where);
            ok = t && add_def(&L, name, t);
            if (ok && strcmp(name, "main") != 0 && (t->kind == K_RECORD || t->kind == K_METHOD)) {
                load_fail(&L, where, "records and methods must be the main definition");
                ok = false;
            }
        }
    }
    json_decref(doc);
    if (ok) set->n_docs++;
    return ok;
}

static bool load_tree(lexicon_set *set, const char *dir, char *err, size_t errlen, int depth)
{
    if (depth > 16) {
        snprintf(err, errlen, "%s: directories nested too deep", dir);
        return false;
    }
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) {
            snprintf(err, errlen, "%s/%s: path too long", dir, e->d_name);
            ok = false;
            break;
        }
        struct stat st;
        if (stat(path, &st) != 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            ok = false;
        } else if (S_ISDIR(st.st_mode)) {
            ok = load_tree(set, path, err, errlen, depth + 1);
        } else {
            size_t n = strlen(e->d_name);
            if (n > 5 && strcmp(e->d_name + n - 5, ".json") == 0)
                ok = load_doc(set, path, err, errlen);
        }
    }
    closedir(d);
    return ok;
}

static int def_cmp(const void *a, const void *b)
{
    return strcmp(((const struct def *)a)->fqn, ((const struct def *)b)->fqn);
}

static struct type *find_def(const lexicon_set *set, const char *fqn)
{
    struct def key = {fqn, NULL};
    const struct def *d = bsearch(&key, set->defs, set->n_defs, sizeof *set->defs, def_cmp);
    return d ? d->type : NULL;
}

static bool resolve(lexicon_set *set, char *err, size_t errlen)
{
    if (set->n_defs) qsort(set->defs, set->n_defs, sizeof *set->defs, def_cmp);
    for (size_t i = 0; i < set->n_pending; i++) {
        struct type *t = set->pending[i];
        if (t->kind == K_REF) {
            if (!(t->target = find_def(set, t->ref))) {
                snprintf(err, errlen, "unresolved ref \"%s\"", t->ref);
                return false;
            }
            continue;
        }
        for (size_t k = 0; k < t->union_refs.n; k++) {
            if (!(t->union_targets[k] = find_def(set, t->union_refs.items[k]))) {
                snprintf(err, errlen, "unresolved union ref \"%s\"", t->union_refs.items[k]);
                return false;
            }
        }
    }
    return true;
}

lexicon_set *lexicon_load_dir(const char *dir, char *err, size_t errlen)
{
    lexicon_set *set = calloc(1, sizeof *set);
    if (!set) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!load_tree(set, dir, err, errlen, 0) || !resolve(set, err, errlen)) {
        lexicon_free(set);
        return NULL;
    }
    if (set->n_docs == 0) {
        snprintf(err, errlen, "%s: no lexicon documents", dir);
        lexicon_free(set);
        return NULL;
    }
    /* The resolve list is only needed while loading. */
    free(set->pending);
    set->pending = NULL;
    set->n_pending = set->cap_pending = 0;
    return set;
}

size_t lexicon_doc_count(const lexicon_set *set)
{
    return set->n_docs;
}

bool lexicon_is_record_type(const lexicon_set *set, const char *nsid)
{
    const struct type *t = find_def(set, nsid);
    return t && t->kind == K_RECORD;
}

/* ---- validation ---- */

/* The path is kept as a stack of segments and only formatted when something fails, so the
 * success path does no string work. */
struct seg {
    const char *key; /* NULL: array index */
    size_t index;
};

struct vctx {
    const json_doc *d; /* the record's */
    struct seg segs[32];
    size_t depth; /* may exceed 32 on deep data; deeper segments are shown as "..." */
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int vfail(struct vctx *c, const char *fmt, ...)
{
    if (!c->err || !c->errlen) return -1;
    char path[256];
    size_t n = 0, shown = c->depth < 32 ? c->depth : 32;
    path[0] = '\0';
    for (size_t i = 0; i < shown && n < sizeof path; i++) {
        int w = c->segs[i].key
                    ? snprintf(path + n, sizeof path - n, "%s%s", n ? "." : "", c->segs[i].key)
                    : snprintf(path + n, sizeof path - n, "[%zu]", c->segs[i].index);
        n += w > 0 ? (size_t)w : 0;
    }
    if (c->depth > shown && n < sizeof path) snprintf(path + n, sizeof path - n, "...");
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: %s", c->depth ? path : "record", msg);
    return -1;
}

static void push_key(struct vctx *c, const char *key)
{
    if (c->depth < 32) c->segs[c->depth] = (struct seg){key, 0};
    c->depth++;
}

static void push_index(struct vctx *c, size_t i)
{
    if (c->depth < 32) c->segs[c->depth] = (struct seg){NULL, i};
    c->depth++;
}

static void pop(struct vctx *c)
{
    c->depth--;
}

/* Code points that extend the previous grapheme (see lexicon.h for the approximation). */
static bool extends_grapheme(unsigned int cp)
{
    return (cp >= 0x0300 && cp <= 0x036F) || (cp >= 0x1AB0 && cp <= 0x1AFF) ||
           (cp >= 0x1DC0 && cp <= 0x1DFF) || (cp >= 0x20D0 && cp <= 0x20FF) ||
           (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0xFE20 && cp <= 0xFE2F) ||
           (cp >= 0x1F3FB && cp <= 0x1F3FF) || (cp >= 0xE0020 && cp <= 0xE007F) ||
           (cp >= 0xE0100 && cp <= 0xE01EF) || cp == 0x200C;
}

static size_t count_graphemes(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t count = 0;
    bool join_next = false, pending_ri = false;
    for (size_t i = 0; i < len;) {
        unsigned int cp = s[i];
        size_t n = cp < 0x80 ? 1 : cp < 0xE0 ? 2 : cp < 0xF0 ? 3 : 4;
        if (n > 1) {
            cp &= 0x3F >> (n - 1);
            for (size_t k = 1; k < n && i + k < len; k++)
                cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        i += n;
        bool ri = cp >= 0x1F1E6 && cp <= 0x1F1FF;
        if (cp == 0x200D) {
            join_next = true;
        } else if (join_next || extends_grapheme(cp)) {
            join_next = false;
        } else if (ri && pending_ri) {
            pending_ri = false;
        } else {
            count++;
            pending_ri = ri;
            continue;
        }
        if (!ri) pending_ri = false;
    }
    return count;
}

/* BCP 47, loosely: a 2-3 letter primary language (or "i"), then [A-Za-z0-9]+ subtags. */
static bool is_language(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && s[i] >= 'a' && s[i] <= 'z')
        i++;
    if (!(i == 1 ? s[0] == 'i' : i == 2 || i == 3)) return false;
    while (i < len) {
        if (s[i++] != '-') return false;
        size_t start = i;
        while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                           (s[i] >= '0' && s[i] <= '9')))
            i++;
        if (i == start) return false;
    }
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Same as @atproto/syntax isValidUri: \w+:(//)?[^\s/][^\s]* */
static bool is_uri(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                       (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
        i++;
    if (i == 0 || i >= len || s[i] != ':') return false;
    i++;
    if (i + 1 < len && s[i] == '/' && s[i + 1] == '/') i += 2;
    if (i >= len || s[i] == '/') return false;
    for (; i < len; i++)
        if (is_space(s[i])) return false;
    return true;
}

static bool format_ok(enum format f, const char *s, size_t n)
{
    switch (f) {
    case F_NONE:
        return true;
    case F_DID:
        return atp_is_did(s, n);
    case F_HANDLE:
        return atp_is_handle(s, n);
    case F_NSID:
        return atp_is_nsid(s, n);
    case F_AT_URI:
        return atp_is_at_uri(s, n);
    case F_DATETIME:
        return atp_is_datetime(s, n);
    case F_CID:
        return atp_is_cid(s, n);
    case F_URI:
        return n <= 8192 && is_uri(s, n);
    case F_AT_IDENTIFIER:
        return n > 4 && memcmp(s, "did:", 4) == 0 ? atp_is_did(s, n) : atp_is_handle(s, n);
    case F_RECORD_KEY:
        return atp_is_rkey(s, n);
    case F_TID:
        return atp_is_tid(s, n);
    case F_LANGUAGE:
        return is_language(s, n);
    }
    return false;
}

static int check(struct vctx *c, const struct type *t, json_ref v);

static int check_string(struct vctx *c, const struct type *t, json_ref v)
{
    size_t n;
    const char *s = json_doc_string(c->d, v, &n);
    if (!s) return vfail(c, "must be a string");
    if (t->max_len >= 0 && (long long)n > t->max_len)
        return vfail(c, "must not be longer than %lld bytes", t->max_len);
    if (t->min_len >= 0 && (long long)n < t->min_len)
        return vfail(c, "must not be shorter than %lld bytes", t->min_len);
    if (t->max_graphemes >= 0 || t->min_graphemes >= 0) {
        long long g = (long long)count_graphemes(s, n);
        if (t->max_graphemes >= 0 && g > t->max_graphemes)
            return vfail(c, "must not be longer than %lld graphemes", t->max_graphemes);
        if (t->min_graphemes >= 0 && g < t->min_graphemes)
            return vfail(c, "must not be shorter than %lld graphemes", t->min_graphemes);
    }
    if (t->format != F_NONE && !format_ok(t->format, s, n))
        return vfail(c, "must be a valid %s", format_names[t->format]);
    if (t->str_enum.n && !str_list_has(&t->str_enum, s, n))
        return vfail(c, "must be one of the enumerated values");
    if (t->const_str && (n != t->const_str_len || memcmp(s, t->const_str, n) != 0))
        return vfail(c, "must be \"%s\"", t->const_str);
    return 0;
}

static int check_integer(struct vctx *c, const struct type *t, json_ref v)
{
    json_int_t x;
    double real = json_doc_real(c->d, v);
    if (json_doc_is(c->d, v, JSON_DOC_INTEGER)) {
        x = (json_int_t)json_doc_integer(c->d, v);
    } else if (json_doc_is(c->d, v, JSON_DOC_REAL) && fabs(real) < 9007199254740992.0 &&
               real == floor(real)) {
        x = (json_int_t)real; /* JSON does not tell 2.0 from 2, nor does JS */
    } else {
        return vfail(c, "must be an integer");
    }
    if (t->has_min && x < t->min) return vfail(c, "must be at least %" JSON_INTEGER_FORMAT, t->min);
    if (t->has_max && x > t->max) return vfail(c, "must be at most %" JSON_INTEGER_FORMAT, t->max);
    if (t->has_const_int && x != t->const_int)
        return vfail(c, "must be %" JSON_INTEGER_FORMAT, t->const_int);
    if (t->n_int_enum) {
        for (size_t i = 0; i < t->n_int_enum; i++)
            if (t->int_enum[i] == x) return 0;
        return vfail(c, "must be one of the enumerated values");
    }
    return 0;
}

static bool is_cid_value(const json_doc *d, json_ref v)
{
    size_t n;
    const char *s = json_doc_string(d, v, &n);
    return s && atp_is_cid(s, n);
}

/* {"$type": "blob", "ref": {"$link": CID}, "mimeType": ..., "size": N}, or the legacy
 * {"cid": CID, "mimeType": ...} that old records still carry. */
static int check_blob(struct vctx *c, json_ref v)
{
    const json_doc *d = c->d;
    if (!json_doc_is(d, v, JSON_DOC_OBJECT)) return vfail(c, "must be a blob object");
    json_ref type = json_doc_get(d, v, "$type");
    size_t mimelen = 0;
    const char *mime = json_doc_string(d, json_doc_get(d, v, "mimeType"), &mimelen);
    if (type == JSON_DOC_NONE) {
        if (!is_cid_value(d, json_doc_get(d, v, "cid")) || !mime)
            return vfail(c, "must be a blob object");
        return 0;
    }
    const char *ty = json_doc_string(d, type, NULL);
    if (!ty || strcmp(ty, "blob") != 0) return vfail(c, "blob $type must be \"blob\"");
    if (!is_cid_value(d, json_doc_get(d, json_doc_get(d, v, "ref"), "$link")))
        return vfail(c, "blob ref must be {\"$link\": cid}");
    if (!mime || mimelen == 0) return vfail(c, "blob mimeType must be a non-empty string");
    json_ref size = json_doc_get(d, v, "size");
    if (!json_doc_is(d, size, JSON_DOC_INTEGER) || json_doc_integer(d, size) < 0)
        return vfail(c, "blob size must be a non-negative integer");
    return 0;
}

static int check_bytes(struct vctx *c, const struct type *t, json_ref v)
{
    size_t n;
    const char *s = json_doc_string(c->d, json_doc_get(c->d, v, "$bytes"), &n);
    if (!s) return vfail(c, "must be {\"$bytes\": base64}");
    while (n && s[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return vfail(c, "$bytes must be base64");
    }
    long long decoded = (long long)(n * 3 / 4);
    if (t->max_len >= 0 && decoded > t->max_len)
        return vfail(c, "must not be longer than %lld bytes", t->max_len);
    if (t->min_len >= 0 && decoded < t->min_len)
        return vfail(c, "must not be shorter than %lld bytes", t->min_len);
    return 0;
}

/* The property of t named by the len bytes at name, or NULL. */
static const struct prop *prop_named(const struct type *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->n_props; i++)
        if (t->props[i].name_len == len && !memcmp(t->props[i].name, name, len))
            return &t->props[i];
    return NULL;
}

/* Each member against its property, then the required ones counted: a record holds few of
 * its lexicon's optional properties, and looking each of those up to find it absent cost more
 * than the checks. Members no property names are left as they are. */
static int check_object(struct vctx *c, const struct type *t, json_ref v)
{
    const json_doc *d = c->d;
    if (!json_doc_is(d, v, JSON_DOC_OBJECT)) return vfail(c, "must be an object");
    size_t required = 0;
    json_ref m = json_doc_first(v);
    for (size_t i = 0, n = json_doc_size(d, v); i < n; i++, m = json_doc_after(d, m)) {
        size_t len;
        const char *name = json_doc_name(d, m, &len);
        const struct prop *p = prop_named(t, name, len);
        if (!p) continue;
        required += p->required;
        if (json_doc_is(d, m, JSON_DOC_NULL) && p->nullable) continue;
        push_key(c, p->name);
        int rc = check(c, p->type, m);
        pop(c);
        if (rc) return rc;
    }
    for (size_t i = 0; required < t->n_required && i < t->n_props; i++) {
        const struct prop *p = &t->props[i];
        if (p->required && json_doc_getn(d, v, p->name, p->name_len) == JSON_DOC_NONE) {
            push_key(c, p->name);
            vfail(c, "required field missing");
            pop(c);
            return -1;
        }
    }
    return 0;
}

static int check_array(struct vctx *c, const struct type *t, json_ref v)
{
    if (!json_doc_is(c->d, v, JSON_DOC_ARRAY)) return vfail(c, "must be an array");
    size_t n = json_doc_size(c->d, v);
    if (t->max_len >= 0 && (long long)n > t->max_len)
        return vfail(c, "must not have more than %lld elements", t->max_len);
    if (t->min_len >= 0 && (long long)n < t->min_len)
        return vfail(c, "must not have fewer than %lld elements", t->min_len);
    json_ref e = json_doc_first(v);
    for (size_t i = 0; i < n; i++, e = json_doc_after(c->d, e)) {
        push_index(c, i);
        int rc = check(c, t->items, e);
        pop(c);
        if (rc) return rc;
    }
    return 0;
}

static int check_union(struct vctx *c, const struct type *t, json_ref v)
{
    size_t n;
    const char *s = json_doc_string(c->d, json_doc_get(c->d, v, "$type"), &n);
    if (!s) return vfail(c, "must be an object with a \"$type\"");
    if (n > 5 && memcmp(s + n - 5, "#main", 5) == 0) n -= 5;
    for (size_t i = 0; i < t->union_refs.n; i++)
        if (t->union_refs.lens[i] == n && memcmp(t->union_refs.items[i], s, n) == 0)
            return check(c, t->union_targets[i], v);
    if (t->closed) return vfail(c, "$type must be one of the union's refs");
    return 0;
}

static int check(struct vctx *c, const struct type *t, json_ref v)
{
    const json_doc *d = c->d;
    switch (t->kind) {
    case K_BOOLEAN:
        if (!json_doc_is(d, v, JSON_DOC_TRUE) && !json_doc_is(d, v, JSON_DOC_FALSE))
            return vfail(c, "must be a boolean");
        if (t->const_bool >= 0 && json_doc_is(d, v, JSON_DOC_TRUE) != t->const_bool)
            return vfail(c, "must be %s", t->const_bool ? "true" : "false");
        return 0;
    case K_INTEGER:
        return check_integer(c, t, v);
    case K_STRING:
        return check_string(c, t, v);
    case K_BYTES:
        return check_bytes(c, t, v);
    case K_CID_LINK:
        if (!is_cid_value(d, json_doc_get(d, v, "$link")))
            return vfail(c, "must be {\"$link\": cid}");
        return 0;
    case K_BLOB:
        return check_blob(c, v);
    case K_UNKNOWN:
        return json_doc_is(d, v, JSON_DOC_OBJECT) ? 0 : vfail(c, "must be an object");
    case K_ARRAY:
        return check_array(c, t, v);
    case K_OBJECT:
        return check_object(c, t, v);
    case K_REF:
        return check(c, t->target, v);
    case K_UNION:
        return check_union(c, t, v);
    case K_RECORD:
        return check_object(c, t->record, v);
    case K_TOKEN:
    case K_METHOD:
        break;
    }
    return vfail(c, "refers to a definition that cannot hold data");
}

int lexicon_validate_value(const lexicon_set *set, const char *nsid, const json_doc *d,
                           json_ref record, char *err, size_t errlen)
{
    struct vctx c = {.d = d, .err = err, .errlen = errlen};
    const struct type *t = find_def(set, nsid);
    if (!t || t->kind != K_RECORD) {
        if (err && errlen) snprintf(err, errlen, "%s: not a known record type", nsid);
        return -1;
    }
    if (!json_doc_is(d, record, JSON_DOC_OBJECT)) return vfail(&c, "must be an object");
    size_t n, want = strlen(nsid);
    const char *s = json_doc_string(d, json_doc_get(d, record, "$type"), &n);
    if (!s) return vfail(&c, "$type must be a string");
    if (!((n == want || (n == want + 5 && memcmp(s + want, "#main", 5) == 0)) &&
          memcmp(s, nsid, want) == 0))
        return vfail(&c, "$type must be %s", nsid);
    return check_object(&c, t->record, record);
}

int lexicon_validate_record(const lexicon_set *set, const char *nsid, const json_t *record,
                            char *err, size_t errlen)
{
    json_doc d = {0};
    json_ref v = JSON_DOC_NONE; /* a scalar: no doc holds it, and it is not an object */
    if (json_is_object(record) || json_is_array(record)) {
        if (json_doc_from_jansson(&d, record) < 0) {
            if (err && errlen) snprintf(err, errlen, "record: out of memory");
            return -1;
        }
        v = 0;
    }
    int rc = lexicon_validate_value(set, nsid, &d, v, err, errlen);
    json_doc_free(&d);
    return rc;
}

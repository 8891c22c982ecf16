/* Hand-written scanners rather than regexes: these run for every field of every ingested record,
 * so each is a single pass over the bytes with no allocation. The rules follow the atproto specs
 * (atproto.com/specs) and their interop test files, and the OCI distribution spec. */
#include "atproto/syntax.h"

#include <string.h>

/* Which classes each byte is in: the scanners test a byte with one load, where a chain of
 * range compares per byte made them a twentieth of the ingester's cycles. */
enum {
    C_LOWER = 1,
    C_UPPER = 2,
    C_DIGIT = 4,
    C_HEX_LOWER = 8,  /* a-f */
    C_HEX_UPPER = 16, /* A-F */
    C_B32 = 32,       /* a-z 2-7: base32 sortable (TIDs) and multibase base32 (CIDs) */
    C_B58 = 64,       /* base58btc: alphanumerics but 0 O I l */
    C_RKEY = 128,     /* a record key's characters: A-Z a-z 0-9 . - _ : ~ */
    C_DID = 256,      /* a DID identifier's, %-escapes aside: A-Z a-z 0-9 . _ : - */
};

static const unsigned short char_class[256] = {
    ['-'] = C_RKEY | C_DID,
    ['.'] = C_RKEY | C_DID,
    ['0'] = C_DIGIT | C_RKEY | C_DID,
    ['1'] = C_DIGIT | C_B58 | C_RKEY | C_DID,
    ['2'] = C_DIGIT | C_B32 | C_B58 | C_RKEY | C_DID,
    ['3'] = C_DIGIT | C_B32 | C_B58 | C_RKEY | C_DID,
    ['4'] = C_DIGIT | C_B32 | C_B58 | C_RKEY | C_DID,
    ['5'] = C_DIGIT | C_B32 | C_B58 | C_RKEY | C_DID,
    ['6'] = C_DIGIT | C_B32 | C_B58 | C_RKEY | C_DID,
    ['7'] = C_DIGIT | C_B32 | C_B58 | C_RKEY | C_DID,
    ['8'] = C_DIGIT | C_B58 | C_RKEY | C_DID,
    ['9'] = C_DIGIT | C_B58 | C_RKEY | C_DID,
    [':'] = C_RKEY | C_DID,
    ['A'] = C_UPPER | C_HEX_UPPER | C_B58 | C_RKEY | C_DID,
    ['B'] = C_UPPER | C_HEX_UPPER | C_B58 | C_RKEY | C_DID,
    ['C'] = C_UPPER | C_HEX_UPPER | C_B58 | C_RKEY | C_DID,
    ['D'] = C_UPPER | C_HEX_UPPER | C_B58 | C_RKEY | C_DID,
    ['E'] = C_UPPER | C_HEX_UPPER | C_B58 | C_RKEY | C_DID,
    ['F'] = C_UPPER | C_HEX_UPPER | C_B58 | C_RKEY | C_DID,
    ['G'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['H'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['I'] = C_UPPER | C_RKEY | C_DID,
    ['J'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['K'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['L'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['M'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['N'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['O'] = C_UPPER | C_RKEY | C_DID,
    ['P'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['Q'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['R'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['S'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['T'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['U'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['V'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['W'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['X'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['Y'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['Z'] = C_UPPER | C_B58 | C_RKEY | C_DID,
    ['_'] = C_RKEY | C_DID,
    ['a'] = C_LOWER | C_HEX_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['b'] = C_LOWER | C_HEX_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['c'] = C_LOWER | C_HEX_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['d'] = C_LOWER | C_HEX_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['e'] = C_LOWER | C_HEX_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['f'] = C_LOWER | C_HEX_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['g'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['h'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['i'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['j'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['k'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['l'] = C_LOWER | C_B32 | C_RKEY | C_DID,
    ['m'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['n'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['o'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['p'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['q'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['r'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['s'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['t'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['u'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['v'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['w'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['x'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['y'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['z'] = C_LOWER | C_B32 | C_B58 | C_RKEY | C_DID,
    ['~'] = C_RKEY,
};

static bool in_class(char c, unsigned cls)
{
    return (char_class[(unsigned char)c] & cls) != 0;
}

static bool is_lower(char c)
{
    return in_class(c, C_LOWER);
}

static bool is_digit(char c)
{
    return in_class(c, C_DIGIT);
}

static bool is_alpha(char c)
{
    return in_class(c, C_LOWER | C_UPPER);
}

static bool is_alnum(char c)
{
    return in_class(c, C_LOWER | C_UPPER | C_DIGIT);
}

static bool is_hex(char c)
{
    return in_class(c, C_DIGIT | C_HEX_LOWER | C_HEX_UPPER);
}

static bool is_lower_hex(char c)
{
    return in_class(c, C_DIGIT | C_HEX_LOWER);
}

/* did:method:identifier, the method lowercase letters, the identifier [A-Za-z0-9._:%-] with
 * %-escapes of two hex digits (W3C DID syntax) and not ending in ':' or '%'. */
bool atp_is_did(const char *s, size_t len)
{
    if (len < 7 || len > 2048 || memcmp(s, "did:", 4) != 0) return false;
    size_t i = 4;
    while (i < len && is_lower(s[i]))
        i++;
    if (i == 4 || i >= len || s[i] != ':') return false;
    i++;
    if (i >= len) return false;
    for (; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2])) return false;
            i += 2;
        } else if (!in_class(c, C_DID)) {
            return false;
        }
    }
    return s[len - 1] != ':';
}

/* Domain labels of 1-63 [A-Za-z0-9-], no leading/trailing hyphen; at least two labels; the
 * last (TLD) starts with a letter; at most 253 characters. */
bool atp_is_handle(const char *s, size_t len)
{
    if (len == 0 || len > 253) return false;
    size_t labels = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (!(is_alnum(s[i]) || s[i] == '-')) return false;
            continue;
        }
        size_t n = i - start;
        if (n == 0 || n > 63 || s[start] == '-' || s[i - 1] == '-') return false;
        labels++;
        if (i == len && !is_alpha(s[start])) return false;
        start = i + 1;
    }
    return labels >= 2;
}

/* Current NSID spec: at least three segments, total <= 317; the domain segments are labels
 * (1-63, [A-Za-z0-9-], no edge hyphens) and the first one starts with a letter; the last
 * segment (the name) is [A-Za-z][A-Za-z0-9]{0,62}. */
bool atp_is_nsid(const char *s, size_t len)
{
    if (len == 0 || len > 317) return false;
    size_t last_dot = len;
    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == '.') {
            last_dot = i - 1;
            break;
        }
    }
    if (last_dot == len) return false;
    const char *name = s + last_dot + 1;
    size_t name_len = len - last_dot - 1;
    if (name_len == 0 || name_len > 63 || !is_alpha(name[0])) return false;
    for (size_t i = 1; i < name_len; i++)
        if (!is_alnum(name[i])) return false;
    size_t segments = 1, start = 0;
    for (size_t i = 0; i <= last_dot; i++) {
        if (i < last_dot && s[i] != '.') {
            if (!(is_alnum(s[i]) || s[i] == '-')) return false;
            continue;
        }
        size_t n = i - start;
        if (n == 0 || n > 63 || s[start] == '-' || s[i - 1] == '-') return false;
        if (start == 0 && !is_alpha(s[0])) return false;
        segments++;
        start = i + 1;
    }
    return segments >= 3;
}

bool atp_is_rkey(const char *s, size_t len)
{
    if (len == 0 || len > 512) return false;
    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) return false;
    for (size_t i = 0; i < len; i++) {
        if (!in_class(s[i], C_RKEY)) return false;
    }
    return true;
}

bool atp_is_tid(const char *s, size_t len)
{
    if (len != 13) return false;
    /* The first character carries the top bit of a 64-bit integer that must stay zero. */
    if (!((s[0] >= '2' && s[0] <= '7') || (s[0] >= 'a' && s[0] <= 'j'))) return false;
    for (size_t i = 1; i < len; i++)
        if (!in_class(s[i], C_B32)) return false;
    return true;
}

/* The restricted form lexicons use: at://AUTHORITY[/COLLECTION[/RKEY]], no query, fragment or
 * trailing slash; total at most 8 KiB. */
bool atp_is_at_uri(const char *s, size_t len)
{
    if (len < 6 || len > 8192 || memcmp(s, "at://", 5) != 0) return false;
    const char *p = s + 5, *end = s + len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    size_t auth_len = (size_t)(auth_end - p);
    if (!(atp_is_did(p, auth_len) || atp_is_handle(p, auth_len))) return false;
    if (!slash) return true;
    p = slash + 1;
    slash = memchr(p, '/', (size_t)(end - p));
    const char *coll_end = slash ? slash : end;
    if (!atp_is_nsid(p, (size_t)(coll_end - p))) return false;
    if (!slash) return true;
    p = slash + 1;
    return atp_is_rkey(p, (size_t)(end - p));
}

static int two_digits(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i])) return false;
    return true;
}

/* YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), uppercase T and Z, a real calendar date,
 * no "-00:00" (RFC 3339's "unknown offset"), fraction of 1-20 digits, at most 64 characters. */
bool atp_is_datetime(const char *s, size_t len)
{
    if (len < 20 || len > 64) return false;
    if (!all_digits(s, 4) || s[4] != '-' || !all_digits(s + 5, 2) || s[7] != '-' ||
        !all_digits(s + 8, 2) || s[10] != 'T' || !all_digits(s + 11, 2) || s[13] != ':' ||
        !all_digits(s + 14, 2) || s[16] != ':' || !all_digits(s + 17, 2))
        return false;
    int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + two_digits(s + 2);
    int month = two_digits(s + 5), day = two_digits(s + 8);
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12 || day < 1) return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap)) return false;
    if (two_digits(s + 11) > 23 || two_digits(s + 14) > 59 || two_digits(s + 17) > 59) return false;
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && is_digit(s[i]))
            i++;
        if (i == start || i - start > 20) return false;
    }
    if (i == len - 1) return s[i] == 'Z';
    if (i + 6 != len || (s[i] != '+' && s[i] != '-') || !all_digits(s + i + 1, 2) ||
        s[i + 3] != ':' || !all_digits(s + i + 4, 2))
        return false;
    if (two_digits(s + i + 1) > 23 || two_digits(s + i + 4) > 59) return false;
    return !(s[i] == '-' && memcmp(s + i + 1, "00:00", 5) == 0);
}

/* Syntax only: a CIDv1 in the multibase base32 lowercase form ("b" + [a-z2-7]) of 8-256
 * characters, or a CIDv0 ("Qm" + 44 base58 characters, a sha2-256 multihash). */
bool atp_is_cid(const char *s, size_t len)
{
    if (len == 46 && s[0] == 'Q' && s[1] == 'm') {
        for (size_t i = 2; i < len; i++)
            if (!in_class(s[i], C_B58)) return false;
        return true;
    }
    if (len < 8 || len > 256 || s[0] != 'b') return false;
    for (size_t i = 1; i < len; i++)
        if (!in_class(s[i], C_B32)) return false;
    return true;
}

size_t atp_utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0; /* continuation byte, overlong 2-byte lead (C0/C1) or > U+10FFFF */
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

bool atp_is_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = atp_utf8_sequence(s + i, len - i);
        if (!n) return false;
        i += n;
    }
    return true;
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*. */
static bool oci_component(const char *s, size_t len)
{
    if (len == 0) return false;
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (i < len && (is_lower(s[i]) || is_digit(s[i])))
            i++;
        if (i == run) return false;
        if (i == len) return true;
        if (s[i] == '.') {
            i++;
        } else if (s[i] == '_') {
            i++;
            if (i < len && s[i] == '_') i++;
        } else if (s[i] == '-') {
            while (i < len && s[i] == '-')
                i++;
        } else {
            return false;
        }
        if (i == len) return false;
    }
    return true;
}

bool oci_is_repository(const char *s, size_t len)
{
    if (len == 0 || len > 255) return false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '/') {
            if (!oci_component(s + start, i - start)) return false;
            start = i + 1;
        }
    }
    return true;
}

bool oci_is_tag(const char *s, size_t len)
{
    if (len == 0 || len > 128 || !(is_alnum(s[0]) || s[0] == '_')) return false;
    for (size_t i = 1; i < len; i++)
        if (!(is_alnum(s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-')) return false;
    return true;
}

/* algorithm ":" encoded; algorithm = [a-z0-9]+ joined by [+._-]; encoded = [a-zA-Z0-9=_-]+.
 * The registered algorithms pin the encoding: sha256 is 64 and sha512 128 lowercase hex. */
bool oci_is_digest(const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    if (!colon || colon == s || (size_t)(colon - s) + 1 >= len) return false;
    size_t alen = (size_t)(colon - s);
    bool need_component = true;
    for (size_t i = 0; i < alen; i++) {
        char c = s[i];
        if (is_lower(c) || is_digit(c)) {
            need_component = false;
        } else if ((c == '+' || c == '.' || c == '_' || c == '-') && !need_component) {
            need_component = true;
        } else {
            return false;
        }
    }
    if (need_component) return false;
    const char *enc = colon + 1;
    size_t elen = len - alen - 1;
    size_t want_hex = 0;
    if (alen == 6 && memcmp(s, "sha256", 6) == 0)
        want_hex = 64;
    else if (alen == 6 && memcmp(s, "sha512", 6) == 0)
        want_hex = 128;
    if (want_hex) {
        if (elen != want_hex) return false;
        for (size_t i = 0; i < elen; i++)
            if (!is_lower_hex(enc[i])) return false;
        return true;
    }
    for (size_t i = 0; i < elen; i++)
        if (!(is_alnum(enc[i]) || enc[i] == '=' || enc[i] == '_' || enc[i] == '-')) return false;
    return true;
}

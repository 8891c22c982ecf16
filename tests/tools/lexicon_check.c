/* Validates records with atproto/lexicon, for comparison with the reference validator:
 *   lexicon_check LEXICON_DIR SAMPLES.jsonl
 * Each input line is {"nsid": ..., "record": {...}}; each output line is {"ok": true} or
 * {"ok": false, "error": reason}. Exit 0 when every line was read, 1 on a bad line or file. */
#include "atproto/lexicon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s LEXICON_DIR SAMPLES.jsonl\n", argv[0]);
        return 2;
    }
    char err[512];
    lexicon_set *lex = lexicon_load_dir(argv[1], err, sizeof err);
    if (!lex) {
        fprintf(stderr, "lexicon_check: %s\n", err);
        return 1;
    }
    FILE *in = fopen(argv[2], "r");
    if (!in) {
        perror(argv[2]);
        lexicon_free(lex);
        return 1;
    }
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t lineno = 0;
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)n, 0, &jerr);
        const char *nsid = json_string_value(json_object_get(j, "nsid"));
        const json_t *record = json_object_get(j, "record");
        if (!nsid || !record) {
            fprintf(stderr, "lexicon_check: line %zu: want {\"nsid\", \"record\"}\n", lineno);
            json_decref(j);
            rc = 1;
            break;
        }
        json_t *out;
        if (lexicon_validate_record(lex, nsid, record, err, sizeof err) == 0)
            out = json_pack("{s:b}", "ok", 1);
        else
            out = json_pack("{s:b,s:s}", "ok", 0, "error", err);
        char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
        if (!text || puts(text) == EOF) rc = 1;
        free(text);
        json_decref(out);
        json_decref(j);
        if (rc) break;
    }
    free(line);
    fclose(in);
    lexicon_free(lex);
    return rc;
}

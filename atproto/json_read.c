#include "atproto/json_read.h"

json_t *json_read_span(const char *data, size_t len, const char *const *path, json_span *span)
{
    json_doc d = {0};
    json_t *v = json_doc_read(&d, data, len, path, span) == 0 ? json_doc_to_jansson(&d, 0) : NULL;
    json_doc_free(&d);
    if (!v && span) *span = (json_span){0};
    return v;
}

json_t *json_read(const char *data, size_t len)
{
    return json_read_span(data, len, NULL, NULL);
}

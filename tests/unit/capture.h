/* Capturing what a stream (stdout or stderr) receives while a unit test runs code that
 * writes to it: capture_start before, capture_end after, then read the text. */
#ifndef TESTS_CAPTURE_H
#define TESTS_CAPTURE_H

#include <stdio.h>
#include <unistd.h>

#include "check.h"

typedef struct {
    FILE *stream, *tmp;
    int saved; /* the stream's own descriptor, set aside */
} capture;

/* 0, or -1 (a CHECK failed) when the stream could not be redirected. */
static int capture_start(capture *c, FILE *stream)
{
    c->stream = stream;
    c->tmp = tmpfile();
    c->saved = -1;
    CHECK(c->tmp != NULL);
    if (!c->tmp) return -1;
    fflush(stream);
    c->saved = dup(fileno(stream));
    int ok = c->saved >= 0 && dup2(fileno(c->tmp), fileno(stream)) >= 0;
    CHECK(ok);
    return ok ? 0 : -1;
}

/* Puts the stream back and copies what it received into text (cut to cap - 1 bytes, NUL
 * terminated). */
static void capture_end(capture *c, char *text, size_t cap)
{
    text[0] = '\0';
    if (!c->tmp) return;
    fflush(c->stream);
    if (c->saved >= 0) {
        CHECK(dup2(c->saved, fileno(c->stream)) >= 0);
        close(c->saved);
    }
    rewind(c->tmp);
    size_t n = fread(text, 1, cap - 1, c->tmp);
    text[n] = '\0';
    fclose(c->tmp);
}

#endif

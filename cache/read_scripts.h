/* The read script of the XRPC API (appview/reads.c), compiled in from cache/read.lua. What it
 * returns: the comment at the top of the .lua file. */
#ifndef CACHE_READ_SCRIPTS_H
#define CACHE_READ_SCRIPTS_H

extern const char lua_read[];

#endif

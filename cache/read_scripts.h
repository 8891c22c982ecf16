/* The read scripts of the XRPC API (appview/reads.c), compiled in from cache/read_*.lua. What
 * each returns: the comment at the top of its .lua file. */
#ifndef CACHE_READ_SCRIPTS_H
#define CACHE_READ_SCRIPTS_H

extern const char lua_read_list[];
extern const char lua_read_manifest[];

#endif

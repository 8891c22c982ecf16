/* The stats scripts of io.atcr.repo.getStats (appview/stats.c), compiled in from
 * cache/stats_*.lua. What each returns: the comment at the top of its .lua file. */
#ifndef CACHE_STATS_SCRIPTS_H
#define CACHE_STATS_SCRIPTS_H

extern const char lua_stats_holds[];
extern const char lua_stats_save[];

#endif

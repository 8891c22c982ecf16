/* The Lua scripts in cache/ (NAME.lua), compiled into the binary as C strings
 * (tests/tools/embed.sh). What each does and which keys it touches: the comment at the top of its
 * .lua file. */
#ifndef CACHE_SCRIPTS_H
#define CACHE_SCRIPTS_H

extern const char lua_guarded[];
extern const char lua_purge[];
extern const char lua_forget_recent[];
extern const char lua_trim_recent[];
extern const char lua_hold_stats[];
extern const char lua_lease[];
extern const char lua_backfill[];

#endif

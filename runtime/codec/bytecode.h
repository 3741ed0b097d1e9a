/* Private to the parlua runtime: a bounds-checked walker of Lua 5.4's
 * binary chunk format, for the decoder's checks of received bytecode.
 *
 * Lua's loader trusts the count of upvalues the closure is made with (a
 * byte after the header) to match its prototype's, but lua_getupvalue,
 * lua_setupvalue and lua_upvaluejoin index by the prototype's: a message
 * where they differ could make them reach past the closure.  So both are
 * read here (a walk over a 5.4 dump, bounds-checked) and must equal the
 * message's count.  The walk also tells whether any function in the dump
 * assigns an upvalue (decode.c's dec_function).  The header was checked
 * by lua_load.
 */
#ifndef PL_BYTECODE_H
#define PL_BYTECODE_H

#include <stddef.h>

/* 1 when the main function of the dump code[0..n) is made with `nups`
 * upvalues and its prototype has as many. */
int pl_bytecode_upvalues_match(const unsigned char *code, size_t n, unsigned nups);
/* 1 when no function in the dump ever assigns an upvalue (so a closure of
 * it keeps the upvalues it was given, and can serve many messages). */
int pl_bytecode_keeps_upvalues(const unsigned char *code, size_t n);

#endif

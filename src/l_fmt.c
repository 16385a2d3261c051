/*
 * l_fmt.c: the text of a status of many services (issue 15), made in C
 * from values the Lua side gathers. Private to orch (orch.core.fmt, not
 * merged into `orch`): lua/orch/ctl/format.lua is its one user and
 * documents the columns.
 *
 * fmt.table(n) makes an orch.fmt.Table; t:row(...) adds a row of ten
 * values (name, state cell, pid, uptime, restarts, rss, cpu, oom kills,
 * reason, status text; nil or false where absent), formatted at once into
 * the object's memory; t:text() returns the lines of `orch ctl status`,
 * the header and the rows joined by "\n", exactly as format.status_lines
 * makes them in Lua (that stays the reference, and specs compare the
 * two). At 10,000 services the Lua version made about 70,000 cell strings
 * and 10,000 line strings for the collector; this makes the one string it
 * returns. fmt.json(n) makes an orch.fmt.Json, the JSON array of the
 * status records the same way: j:common(...) writes the record of a
 * running service with its figures (status.lua's common case), j:raw(s)
 * one the Lua side wrote, j:text() the array (one string, where a
 * string.format per record joined twice made three copies).
 *
 * Ownership: a Table or Json owns its bytes (malloc'd, grown by doubling),
 * freed by :close(), __close or __gc; nothing is kept between objects.
 * Every argument is checked before a row is written. What may block:
 * nothing.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "runtime.h"
#include "util.h"

#define NCOLS 10
/* What a hint of rows or records to come reserves at most room for: a
 * hint is not a promise (a wrong one must not ask malloc for terabytes). */
#define HINT_MAX 100000
/* Room for any cell: "%.2f" of the largest double is 312 bytes. */
#define CELL 400

enum { C_NAME, C_STATE, C_PID, C_UPTIME, C_RESTARTS, C_RSS, C_CPU, C_OOM, C_REASON, C_TEXT };

static const char *const HEADERS[NCOLS] = { "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "RSS", "CPU",
                                            "OOM", "REASON", "STATUS" };

typedef struct { const char *s; size_t len; int present; } cell;

/* ---------------------------------------------------------------- numbers
 *
 * snprintf's conversions of floats cost 0.5-0.7 us each here, half of a
 * row's cost at 10,000 services. These write the same bytes faster: an
 * integer in decimal; "%.Nf" (N <= 2) and "%.14g" by scaling the number to
 * an integer of at most 14 digits with one multiplication by an exact
 * power of ten. That product is within 1/128 of the exact one, so when its
 * fraction is not within 0.05 of a half, rounding it rounds the exact
 * value the same way; every other number (near a tie, too large or too
 * small, not finite) goes to snprintf. spec/ctl_client_spec.lua compares
 * them with string.format over random and boundary numbers. */

static const double P10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
                              1e14, 1e15, 1e16, 1e17 };

/* The decimal digits of n; returns their count. */
static size_t utoa(char *buf, uint64_t n) {
  char d[20];
  size_t k = 0;
  do {
    d[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  for (size_t i = 0; i < k; i++) buf[i] = d[k - 1 - i];
  return k;
}

/* LUA_INTEGER_FMT ("%lld") of v. */
static size_t itoa_text(char *buf, lua_Integer v) {
  if (v < 0) {
    buf[0] = '-';
    return 1 + utoa(buf + 1, (uint64_t)0 - (uint64_t)v);
  }
  return utoa(buf, (uint64_t)v);
}

/* m rounded to an integer as the exact value it approximates rounds (see
 * above), or -1 when that is not certain. */
static int64_t round_sure(double m) {
  double r = floor(m), f = m - r;
  if (f > 0.45 && f < 0.55) return -1;
  return (int64_t)r + (f > 0.5);
}

/* "%.<frac>f" of v (frac 0-2), or 0 when snprintf must say it. */
static size_t fixed_fast(char *buf, double v, int frac) {
  double a = fabs(v);
  if (!(a < 1e12)) return 0;
  int64_t n = round_sure(a * P10[frac]);
  if (n < 0) return 0;
  size_t len = 0;
  if (signbit(v)) buf[len++] = '-';
  int64_t p = (int64_t)P10[frac];
  len += utoa(buf + len, (uint64_t)(n / p));
  if (frac > 0) {
    int64_t f = n % p;
    buf[len++] = '.';
    for (int i = frac - 1; i >= 0; i--) {
      buf[len + (size_t)i] = (char)('0' + f % 10);
      f /= 10;
    }
    len += (size_t)frac;
  }
  buf[len] = '\0';
  return len;
}

/* "%.14g" of v, or 0 when snprintf must say it. */
static size_t g14_fast(char *buf, double v) {
  double a = fabs(v);
  if (!(a >= 1e-4 && a < 1e14)) return 0;
  /* e: the decimal exponent, 10^e <= a < 10^(e+1) (a product near a power
   * of ten may be off by one: the range check of m below catches it). */
  int e = 0;
  if (a >= 1) {
    while (e < 13 && a >= P10[e + 1]) e++;
  } else {
    e = -1;
    while (e > -4 && a * P10[-e] < 1) e--;
  }
  double m = a * P10[13 - e];
  if (m < 1e13 || m >= 1e14) return 0;
  int64_t n = round_sure(m);
  if (n < 0 || n >= 100000000000000LL) return 0;
  char d[14];
  for (int i = 13; i >= 0; i--) {
    d[i] = (char)('0' + n % 10);
    n /= 10;
  }
  int nd = 14;
  while (nd > 1 && d[nd - 1] == '0') nd--;
  size_t len = 0;
  if (signbit(v)) buf[len++] = '-';
  if (e >= 0) {
    for (int i = 0; i <= e; i++) buf[len++] = d[i];
    if (nd > e + 1) {
      buf[len++] = '.';
      for (int i = e + 1; i < nd; i++) buf[len++] = d[i];
    }
  } else {
    buf[len++] = '0';
    buf[len++] = '.';
    for (int i = 0; i < -e - 1; i++) buf[len++] = '0';
    for (int i = 0; i < nd; i++) buf[len++] = d[i];
  }
  buf[len] = '\0';
  return len;
}

/* "%.14g" of v (LUA_NUMBER_FMT). */
static size_t g14_text(char *buf, size_t size, double v) {
  size_t n = g14_fast(buf, v);
  return n ? n : (size_t)snprintf(buf, size, "%.14g", v);
}

/* Lua's tostring of a float: "%.14g", and ".0" when that looks like an integer. */
static size_t float_text(char *buf, lua_Number v) {
  int n = (int)g14_text(buf, CELL, (double)v);
  if (buf[strspn(buf, "-0123456789")] == '\0') {
    buf[n++] = '.';
    buf[n++] = '0';
    buf[n] = '\0';
  }
  return (size_t)n;
}

/* tostring(math.tointeger(v) or v) of the number at idx. */
static size_t count_text(lua_State *L, int idx, char *buf) {
  lua_Integer i;
  if (lua_isinteger(L, idx)) i = lua_tointeger(L, idx);
  else {
    lua_Number v = lua_tonumber(L, idx);
    if (!lua_numbertointeger(v, &i) || (lua_Number)i != v) return float_text(buf, v);
  }
  return itoa_text(buf, i);
}

/* Lua's floor division and modulo of integers (the sign follows the divisor). */
static lua_Integer ifloordiv(lua_Integer a, lua_Integer b) {
  lua_Integer q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}
static lua_Integer imod(lua_Integer a, lua_Integer b) {
  lua_Integer r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

/* format.duration: "H:MM:SS", "Nd H:MM:SS" past a day. */
static size_t duration_text(lua_State *L, int idx, char *buf) {
  lua_Integer s;
  if (lua_isinteger(L, idx)) s = lua_tointeger(L, idx);
  else if (!lua_numbertointeger(floor(lua_tonumber(L, idx)), &s)) return (size_t)snprintf(buf, CELL, "-");
  lua_Integer d = ifloordiv(s, 86400), h = imod(ifloordiv(s, 3600), 24), m = imod(ifloordiv(s, 60), 60);
  lua_Integer sec = imod(s, 60);
  size_t n = 0;
  if (d > 0) {
    n = itoa_text(buf, d);
    buf[n++] = 'd';
    buf[n++] = ' ';
  }
  n += itoa_text(buf + n, h);
  lua_Integer two[2] = { m, sec };
  for (int i = 0; i < 2; i++) {
    buf[n++] = ':';
    buf[n++] = (char)('0' + two[i] / 10);
    buf[n++] = (char)('0' + two[i] % 10);
  }
  buf[n] = '\0';
  return n;
}

/* format.bytes: "512B", "2.0K", "1.5M", ... */
static size_t bytes_text(lua_State *L, int idx, char *buf) {
  static const char UNITS[] = "BKMGT";
  if (lua_isinteger(L, idx)) {
    lua_Integer n = lua_tointeger(L, idx);
    if (n < 1024) {
      size_t k = itoa_text(buf, n);
      buf[k++] = 'B';
      buf[k] = '\0';
      return k;
    }
  }
  lua_Number v = lua_tonumber(L, idx);
  int i = 0;
  while (v >= 1024 && i < 4) {
    v = v / 1024;
    i++;
  }
  if (i == 0) return (size_t)snprintf(buf, CELL, "%lldB", (long long)v);
  size_t k = fixed_fast(buf, (double)v, 1);
  if (!k) k = (size_t)snprintf(buf, CELL, "%.1f", (double)v);
  buf[k++] = UNITS[i];
  buf[k] = '\0';
  return k;
}

/* The cell of column c for argument idx (a string cell points into it). */
static cell cell_of(lua_State *L, int idx, int c, char *buf) {
  int t = lua_type(L, idx);
  cell x = { buf, 0, t == LUA_TSTRING || t == LUA_TNUMBER };
  int absent = t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, idx));
  switch (c) {
  case C_NAME: case C_STATE:
    if (absent) { x.s = "?"; x.len = 1; }
    else if (t == LUA_TSTRING) x.s = lua_tolstring(L, idx, &x.len);
    else if (t == LUA_TNUMBER) x.len = lua_isinteger(L, idx) ? itoa_text(buf, lua_tointeger(L, idx))
                                                               : float_text(buf, lua_tonumber(L, idx));
    else luaL_typeerror(L, idx, "string");
    break;
  case C_PID: case C_RESTARTS: case C_OOM:
    if (t == LUA_TNUMBER) x.len = count_text(L, idx, buf);
    else { x.s = c == C_RESTARTS ? "0" : "-"; x.len = 1; x.present = 0; }
    break;
  case C_UPTIME:
    if (t == LUA_TNUMBER) x.len = duration_text(L, idx, buf);
    else { x.s = "-"; x.len = 1; }
    break;
  case C_RSS:
    if (t == LUA_TNUMBER) x.len = bytes_text(L, idx, buf);
    else { x.s = "-"; x.len = 1; }
    break;
  case C_CPU:
    if (t == LUA_TNUMBER) {
      lua_Number v = lua_tonumber(L, idx);
      x.len = fixed_fast(buf, (double)v, 2);
      if (!x.len) x.len = (size_t)snprintf(buf, CELL, "%.2f", (double)v);
      buf[x.len++] = 's';
      buf[x.len] = '\0';
    }
    else { x.s = "-"; x.len = 1; }
    break;
  default: /* C_REASON, C_TEXT: strings made by the caller, shown as they are */
    if (t == LUA_TSTRING) x.s = lua_tolstring(L, idx, &x.len);
    else { x.s = "-"; x.len = 1; x.present = 0; }
    break;
  }
  return x;
}

#define TABLE_MT "orch.fmt.Table"

/* The cells of the rows, one after the other: per cell a uint32_t length
 * and its bytes (unaligned, read with memcpy). */
/* A growable malloc'ed buffer (a Table's cells, a Json's text). */
typedef struct {
  char *buf;
  size_t used, cap;
} fbuf;

/* Room for need more bytes; raises on no memory (the object stays valid). */
static void reserve(lua_State *L, fbuf *b, size_t need) {
  if (b->cap - b->used >= need) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->used < need) cap *= 2;
  char *nb = realloc(b->buf, cap);
  if (!nb) luaL_error(L, "not enough memory");
  b->buf = nb;
  b->cap = cap;
}

static void fbuf_free(fbuf *b) {
  free(b->buf);
  b->buf = NULL;
  b->used = b->cap = 0;
}

typedef struct {
  fbuf b;
  size_t rows;
  size_t width[NCOLS], sum[NCOLS];
  int any_oom, any_reason, any_text;
  int closed;
} fmt_table;

static fmt_table *check_table(lua_State *L) {
  fmt_table *t = luaL_checkudata(L, 1, TABLE_MT);
  if (t->closed) orch__closed_error(L, TABLE_MT);
  return t;
}

static int table_close(lua_State *L) {
  fmt_table *t = luaL_checkudata(L, 1, TABLE_MT);
  fbuf_free(&t->b);
  t->closed = 1;
  return 0;
}

/* t:row(name, state, pid, uptime, restarts, rss, cpu, oom, reason, text) */
static int table_row(lua_State *L) {
  fmt_table *t = check_table(L);
  orch__check_nargs(L, 1 + NCOLS);
  lua_settop(L, 1 + NCOLS);
  char bufs[NCOLS][CELL];
  cell cells[NCOLS];
  size_t need = 0;
  for (int c = 0; c < NCOLS; c++) {
    cells[c] = cell_of(L, 2 + c, c, bufs[c]);
    need += sizeof(uint32_t) + cells[c].len;
    if (cells[c].len > UINT32_MAX) luaL_argerror(L, 2 + c, "too long");
  }
  reserve(L, &t->b, need);
  for (int c = 0; c < NCOLS; c++) {
    uint32_t len = (uint32_t)cells[c].len;
    memcpy(t->b.buf + t->b.used, &len, sizeof len);
    memcpy(t->b.buf + t->b.used + sizeof len, cells[c].s, len);
    t->b.used += sizeof len + len;
    if (len > t->width[c]) t->width[c] = len;
    t->sum[c] += len;
  }
  if (cells[C_OOM].present && lua_tonumber(L, 2 + C_OOM) > 0) t->any_oom = 1;
  if (cells[C_REASON].present) t->any_reason = 1;
  if (cells[C_TEXT].present) t->any_text = 1;
  t->rows++;
  return 0;
}

/* t:text() -> the table's lines (see the top). */
static int table_text(lua_State *L) {
  fmt_table *t = check_table(L);
  orch__check_nargs(L, 1);
  /* The columns shown, in order. */
  int cols[NCOLS], ncol = 0;
  for (int c = 0; c <= C_CPU; c++) cols[ncol++] = c;
  if (t->any_oom) cols[ncol++] = C_OOM;
  if (t->any_reason) cols[ncol++] = C_REASON;
  if (t->any_text) cols[ncol++] = C_TEXT;
  /* Every line but the last column is padded to the same width. */
  size_t lead = 0;
  for (int k = 0; k < ncol - 1; k++) lead += t->width[cols[k]] + 2;
  int lastc = cols[ncol - 1];
  size_t total = (lead + 1) * (t->rows + 1) + strlen(HEADERS[lastc]) + t->sum[lastc];
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, total);
  size_t pos = 0, at = 0;
  cell cells[NCOLS];
  for (size_t r = 0; r <= t->rows; r++) {
    if (r == 0) {
      for (int c = 0; c < NCOLS; c++) {
        cells[c].s = HEADERS[c];
        cells[c].len = strlen(HEADERS[c]);
      }
    } else {
      out[pos++] = '\n';
      for (int c = 0; c < NCOLS; c++) {
        uint32_t len;
        memcpy(&len, t->b.buf + at, sizeof len);
        cells[c].s = t->b.buf + at + sizeof len;
        cells[c].len = len;
        at += sizeof len + len;
      }
    }
    for (int k = 0; k < ncol; k++) {
      cell x = cells[cols[k]];
      memcpy(out + pos, x.s, x.len);
      pos += x.len;
      if (k < ncol - 1) {
        size_t pad = t->width[cols[k]] - x.len + 2;
        memset(out + pos, ' ', pad);
        pos += pad;
      }
    }
  }
  luaL_pushresultsize(&b, pos);
  return 1;
}

static int table_tostring(lua_State *L) {
  fmt_table *t = luaL_checkudata(L, 1, TABLE_MT);
  if (t->closed) lua_pushstring(L, TABLE_MT ": closed");
  else lua_pushfstring(L, TABLE_MT ": %I rows", (LUAI_UACINT)t->rows);
  return 1;
}

/* fmt.table([n]) -> an empty orch.fmt.Table (n: the rows to come, a hint). */
static int fmt_table_new(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, n >= 0, 1, "a count >= 0 expected");
  orch__check_nargs(L, 1);
  fmt_table *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, TABLE_MT);
  for (int c = 0; c < NCOLS; c++) t->width[c] = strlen(HEADERS[c]);
  /* About 50 bytes a row for the common one; grown when more is needed. */
  if (n > 0) reserve(L, &t->b, (size_t)(n < HINT_MAX ? n : HINT_MAX) * 64);
  return 1;
}

/* ---------------------------------------------------------------- JSON */

#define JSON_MT "orch.fmt.Json"

/* The JSON array of a status's records, written as they come. */
typedef struct {
  fbuf b;
  size_t rows;
  int closed;
} fmt_json;

static fmt_json *check_json(lua_State *L) {
  fmt_json *j = luaL_checkudata(L, 1, JSON_MT);
  if (j->closed) orch__closed_error(L, JSON_MT);
  return j;
}

static int json_close(lua_State *L) {
  fmt_json *j = luaL_checkudata(L, 1, JSON_MT);
  fbuf_free(&j->b);
  j->closed = 1;
  return 0;
}

static void put(lua_State *L, fmt_json *j, const char *s, size_t len) {
  reserve(L, &j->b, len);
  memcpy(j->b.buf + j->b.used, s, len);
  j->b.used += len;
}
#define PUTLIT(L, j, lit) put(L, j, lit, sizeof(lit) - 1)

/* The separator before a record: "[" first, "," after. */
static void json_next(lua_State *L, fmt_json *j) {
  put(L, j, j->rows == 0 ? "[" : ",", 1);
  j->rows++;
}

/* string.format's %d of argument idx (an integer, or a float with an exact one). */
static void put_int(lua_State *L, fmt_json *j, int idx) {
  int isnum;
  lua_Integer v = lua_tointegerx(L, idx, &isnum);
  if (!isnum) luaL_argerror(L, idx, "number has no integer representation");
  char b[32];
  put(L, j, b, itoa_text(b, v));
}

/* string.format's %.14g of argument idx. */
static void put_g(lua_State *L, fmt_json *j, int idx) {
  char b[64];
  put(L, j, b, g14_text(b, sizeof b, (double)luaL_checknumber(L, idx)));
}

/* string.format's %s of a string argument (no conversion). */
static void put_s(lua_State *L, fmt_json *j, int idx) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  put(L, j, s, len);
}

/* An optional figure as status.lua's val() writes a number: null for
 * NaN and infinities, an integer as it is, a float as Lua's tostring. */
static void put_figure(lua_State *L, fmt_json *j, int idx, const char *key, size_t klen) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL) return;
  put(L, j, key, klen);
  if (t == LUA_TBOOLEAN) {
    if (lua_toboolean(L, idx)) PUTLIT(L, j, "true");
    else PUTLIT(L, j, "false");
    return;
  }
  if (t != LUA_TNUMBER) luaL_typeerror(L, idx, "number");
  char b[CELL];
  if (lua_isinteger(L, idx)) {
    put(L, j, b, itoa_text(b, lua_tointeger(L, idx)));
    return;
  }
  lua_Number v = lua_tonumber(L, idx);
  if (v != v || v == HUGE_VAL || v == -HUGE_VAL) PUTLIT(L, j, "null");
  else put(L, j, b, float_text(b, v));
}

/* Whether the bytes need an escape in a JSON string, or are not ASCII
 * (status.lua's pattern '[%c"\\\127-\255]'). */
static int needs_escape(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') return 1;
  }
  return 0;
}

/* j:common(name, service, index, state, pid, start_time, uptime, restarts,
 * log_lines, log_dropped, rss, accounting_age, cpu, cgroup, memory, tasks,
 * oom_kills) -> true: the record of a running service with its figures
 * read and nothing to explain, as status.lua's COMMON format and val()
 * write it. cgroup is its path or the orch.Cgroup itself (its path is
 * read here: no string made per record). The other strings are written as
 * they are: the caller checked that they need no escape; a cgroup path
 * that would need one writes nothing and returns false (the caller writes
 * the record its own way). */
static int json_common(lua_State *L) {
  fmt_json *j = check_json(L);
  orch__check_nargs(L, 18);
  /* Every argument checked before anything is written. */
  static const char KIND[] = "ssisiggiiiiggcfff"; /* s string, i integer, g number, c cgroup, f figure */
  const char *path = NULL;
  size_t plen = 0;
  for (int i = 2; i <= 18; i++) {
    switch (KIND[i - 2]) {
    case 's': luaL_checkstring(L, i); break;
    case 'c': {
      orch__cgroup *cg = lua_type(L, i) == LUA_TUSERDATA ? orch__cg_check(L, i) : NULL;
      if (cg) {
        path = cg->path;
        plen = strlen(path);
      } else path = luaL_checklstring(L, i, &plen);
      break;
    }
    case 'g': luaL_checknumber(L, i); break;
    case 'i': {
      int isnum;
      lua_tointegerx(L, i, &isnum);
      if (!isnum) {
        luaL_checknumber(L, i);
        luaL_argerror(L, i, "number has no integer representation");
      }
      break;
    }
    default: {
      int t = lua_type(L, i);
      if (t != LUA_TNIL && t != LUA_TNONE && t != LUA_TNUMBER && t != LUA_TBOOLEAN) luaL_typeerror(L, i, "number");
    }
    }
  }
  if (needs_escape(path, plen)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  json_next(L, j);
  PUTLIT(L, j, "{\"name\":\""); put_s(L, j, 2);
  PUTLIT(L, j, "\",\"service\":\""); put_s(L, j, 3);
  PUTLIT(L, j, "\",\"index\":"); put_int(L, j, 4);
  PUTLIT(L, j, ",\"state\":\""); put_s(L, j, 5);
  PUTLIT(L, j, "\",\"pid\":"); put_int(L, j, 6);
  PUTLIT(L, j, ",\"start_time\":"); put_g(L, j, 7);
  PUTLIT(L, j, ",\"uptime\":"); put_g(L, j, 8);
  PUTLIT(L, j, ",\"restarts\":"); put_int(L, j, 9);
  PUTLIT(L, j, ",\"log_lines\":"); put_int(L, j, 10);
  PUTLIT(L, j, ",\"log_dropped\":"); put_int(L, j, 11);
  PUTLIT(L, j, ",\"rss\":"); put_int(L, j, 12);
  PUTLIT(L, j, ",\"accounting_age\":"); put_g(L, j, 13);
  PUTLIT(L, j, ",\"cpu\":"); put_g(L, j, 14);
  PUTLIT(L, j, ",\"cgroup\":\""); put(L, j, path, plen);
  PUTLIT(L, j, "\"");
  put_figure(L, j, 16, ",\"memory\":", sizeof(",\"memory\":") - 1);
  put_figure(L, j, 17, ",\"tasks\":", sizeof(",\"tasks\":") - 1);
  put_figure(L, j, 18, ",\"oom_kills\":", sizeof(",\"oom_kills\":") - 1);
  PUTLIT(L, j, "}");
  lua_pushboolean(L, 1);
  return 1;
}

/* j:raw(text): a record the caller wrote. */
static int json_raw(lua_State *L) {
  fmt_json *j = check_json(L);
  luaL_checkstring(L, 2);
  orch__check_nargs(L, 2);
  json_next(L, j);
  put_s(L, j, 2);
  return 0;
}

/* j:text() -> the array's JSON text. */
static int json_text(lua_State *L) {
  fmt_json *j = check_json(L);
  orch__check_nargs(L, 1);
  if (j->rows == 0) {
    lua_pushliteral(L, "[]");
    return 1;
  }
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, j->b.used + 1);
  memcpy(out, j->b.buf, j->b.used);
  out[j->b.used] = ']';
  luaL_pushresultsize(&b, j->b.used + 1);
  return 1;
}

static int json_tostring(lua_State *L) {
  fmt_json *j = luaL_checkudata(L, 1, JSON_MT);
  if (j->closed) lua_pushstring(L, JSON_MT ": closed");
  else lua_pushfstring(L, JSON_MT ": %I records", (LUAI_UACINT)j->rows);
  return 1;
}

/* fmt.json([n]) -> an empty orch.fmt.Json (n: the records to come, a hint). */
static int fmt_json_new(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, n >= 0, 1, "a count >= 0 expected");
  orch__check_nargs(L, 1);
  fmt_json *j = lua_newuserdatauv(L, sizeof *j, 0);
  memset(j, 0, sizeof *j);
  luaL_setmetatable(L, JSON_MT);
  /* About 280 bytes a record for the common one. */
  if (n > 0) reserve(L, &j->b, (size_t)(n < HINT_MAX ? n : HINT_MAX) * 300);
  return 1;
}

int orch__open_fmt(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"row", table_row}, {"text", table_text}, {"close", table_close}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", table_close}, {"__close", table_close}, {"__tostring", table_tostring}, {NULL, NULL}
  };
  orch__newclass(L, TABLE_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg json_methods[] = {
    {"common", json_common}, {"raw", json_raw}, {"text", json_text}, {"close", json_close}, {NULL, NULL}
  };
  static const luaL_Reg json_meta[] = {
    {"__gc", json_close}, {"__close", json_close}, {"__tostring", json_tostring}, {NULL, NULL}
  };
  orch__newclass(L, JSON_MT, json_methods, json_meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = { {"table", fmt_table_new}, {"json", fmt_json_new}, {NULL, NULL} };
  luaL_newlib(L, fns);
  return 1;
}

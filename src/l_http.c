/*
 * l_http.c: orch.httpparse.request(), an HTTP/1.x request parser object
 * (orch.HttpParser) over Debian's libhttp-parser (the parser Node.js used
 * before llhttp). orch.http (lua/orch/http.lua) reads a connection with
 * orch's own streams and feeds each chunk to it; the library does the
 * parsing (request line, header syntax, versions); this file only collects
 * what it reports, within bounds. A request ends with its head: no body is
 * read (orch.http serves GET and HEAD, and refuses the rest unread).
 *
 * Ownership: the userdata holds the http_parser struct and one malloc'ed
 * buffer (the URL and the headers as "name\0value\0" pairs), grown up to
 * the parser's `max_head` bytes and never further: a request whose line and
 * headers exceed it fails with HPE_HEADER_OVERFLOW (like the library's own
 * 80 KiB limit), so a hostile client costs at most max_head bytes. :close()
 * (and __close, __gc) frees the buffer; a closed parser raises on use.
 *
 * The library's callbacks only append bytes to the buffer (no Lua call, no
 * allocation beyond the bound); the request table is built after
 * http_parser_execute returns. Only the first request of a connection is
 * parsed (the parser pauses at the end of its head: orch.http answers one
 * request per connection). Nothing here blocks.
 */
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "runtime.h"
#include "util.h"

#define PARSER_MT "orch.HttpParser"
#define DEFAULT_MAX_HEAD 8192
#define MAX_HEADERS 100

enum { S_HEAD, S_DONE, S_FAILED };

typedef struct {
  http_parser p;
  int open;
  int state;
  size_t max_head;        /* bound of buf and of the bytes before the body */
  size_t head_seen;       /* bytes fed before the headers completed */
  char *buf;              /* url, then name\0value\0 pairs */
  size_t len, cap;
  size_t url_len;
  int in_value;           /* the last header callback was a value */
  int nheaders;
  int overflow;           /* a bound of ours was passed */
} hparser;

static int append(hparser *h, const char *at, size_t n) {
  if (h->len + n + 1 > h->max_head) { h->overflow = 1; return -1; }
  if (h->len + n + 1 > h->cap) {
    size_t cap = h->cap ? h->cap : 256;
    while (cap < h->len + n + 1) cap *= 2;
    if (cap > h->max_head) cap = h->max_head;
    char *b = realloc(h->buf, cap);
    if (!b) { h->overflow = 1; return -1; }
    h->buf = b;
    h->cap = cap;
  }
  memcpy(h->buf + h->len, at, n);
  h->len += n;
  return 0;
}

static int terminate(hparser *h) {   /* ends a url, name or value with \0 */
  if (append(h, "", 0) < 0) return -1;
  h->buf[h->len++] = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  hparser *h = p->data;
  return append(h, at, n) < 0 ? -1 : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  hparser *h = p->data;
  if (h->url_len == 0) {                 /* the first header ends the url */
    if (terminate(h) < 0) return -1;
    h->url_len = h->len;
  } else if (h->in_value) {
    if (terminate(h) < 0) return -1;     /* the previous value */
  }
  if (h->in_value || h->nheaders == 0) {
    if (++h->nheaders > MAX_HEADERS) { h->overflow = 1; return -1; }
  }
  h->in_value = 0;
  return append(h, at, n) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  hparser *h = p->data;
  if (!h->in_value) {
    if (terminate(h) < 0) return -1;     /* the name */
    h->in_value = 1;
  }
  return append(h, at, n) < 0 ? -1 : 0;
}

static int on_headers_complete(http_parser *p) {
  hparser *h = p->data;
  if (h->url_len == 0) {
    if (terminate(h) < 0) return -1;
    h->url_len = h->len;
  } else if (h->in_value) {
    if (terminate(h) < 0) return -1;
  } else if (h->nheaders > 0) {
    /* A name without a value cannot happen: the library reports a value
     * (maybe empty) after every name. */
    if (terminate(h) < 0 || terminate(h) < 0) return -1;
  }
  /* The request is its head: orch.http answers GET and HEAD, and refuses
   * anything else without reading a body. One request per connection: the
   * parser stops here. */
  h->state = S_DONE;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
  .on_url = on_url, .on_header_field = on_header_field, .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
};

static hparser *check_parser(lua_State *L, int idx) {
  hparser *h = luaL_checkudata(L, idx, PARSER_MT);
  if (!h->open) orch__closed_error(L, PARSER_MT);
  return h;
}

/* orch.httpparse.request([{ max_head = n }]) */
static int hp_request(lua_State *L) {
  orch__check_nargs(L, 1);
  lua_Integer max_head = DEFAULT_MAX_HEAD;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      lua_pop(L, 1);
      const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
      if (!k || strcmp(k, "max_head") != 0)
        return luaL_argerror(L, 1, lua_pushfstring(L, "unknown option '%s'", k ? k : luaL_typename(L, -1)));
    }
    if (lua_getfield(L, 1, "max_head") != LUA_TNIL) {
      int ok;
      max_head = lua_tointegerx(L, -1, &ok);
      if (!ok || max_head < 64 || max_head > (1 << 24))
        return orch__opt_error(L, 1, "max_head", "integer from 64 to 16777216 expected");
    }
    lua_pop(L, 1);
  }
  hparser *h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  luaL_setmetatable(L, PARSER_MT);
  http_parser_init(&h->p, HTTP_REQUEST);
  h->p.data = h;
  h->max_head = (size_t)max_head;
  h->open = 1;
  return 1;
}

/* [-0,+1] the request table of a finished head. */
static void push_request(lua_State *L, hparser *h) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, http_method_str((enum http_method)h->p.method));
  lua_setfield(L, -2, "method");
  const char *url = h->buf ? h->buf : "";
  lua_pushstring(L, url);
  lua_setfield(L, -2, "target");
  struct http_parser_url u;
  http_parser_url_init(&u);
  size_t ulen = strlen(url);
  if (http_parser_parse_url(url, ulen, 0, &u) == 0) {
    if (u.field_set & (1 << UF_PATH)) {
      lua_pushlstring(L, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
      lua_setfield(L, -2, "path");
    }
    lua_pushlstring(L, (u.field_set & (1 << UF_QUERY)) ? url + u.field_data[UF_QUERY].off : "",
                    (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0);
    lua_setfield(L, -2, "query_string");
  }
  lua_pushfstring(L, "%d.%d", (int)h->p.http_major, (int)h->p.http_minor);
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, http_should_keep_alive(&h->p));
  lua_setfield(L, -2, "keep_alive");
  lua_createtable(L, 0, h->nheaders);
  size_t i = h->url_len;
  while (i < h->len) {
    const char *name = h->buf + i;
    size_t nlen = strlen(name);
    const char *value = name + nlen + 1;
    size_t vlen = strlen(value);
    size_t next = nlen + 1 + vlen + 1;
    /* The library drops the whitespace before a value, not after it. */
    while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) vlen--;
    luaL_Buffer b;
    char *lower = luaL_buffinitsize(L, &b, nlen);
    for (size_t k = 0; k < nlen; k++) {
      char c = name[k];
      lower[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    luaL_pushresultsize(&b, nlen);
    lua_pushlstring(L, value, vlen);
    lua_rawset(L, -3);
    i += next;
  }
  lua_setfield(L, -2, "headers");
}

/* p:feed(bytes) -> false (more wanted) | req | nil, "http: reason", "HPE_..." */
static int hp_feed(lua_State *L) {
  hparser *h = check_parser(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  orch__check_nargs(L, 2);
  if (h->state == S_DONE) return luaL_error(L, "feed: the request is already complete");
  if (h->state == S_FAILED) return luaL_error(L, "feed: the parser has failed");
  size_t done = http_parser_execute(&h->p, &settings, data, n);
  enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
  if (h->state == S_HEAD) {
    h->head_seen += done;
    if (e == HPE_OK && h->head_seen > h->max_head) h->overflow = 1;
  }
  if (h->state == S_DONE && (e == HPE_OK || e == HPE_PAUSED)) {
    push_request(L, h);
    return 1;
  }
  if (h->overflow) {
    h->state = S_FAILED;
    return orch__failf(L, "HPE_HEADER_OVERFLOW", "http: request head too large");
  }
  if (e != HPE_OK) {
    h->state = S_FAILED;
    if (e == HPE_HEADER_OVERFLOW) return orch__failf(L, "HPE_HEADER_OVERFLOW", "http: request head too large");
    return orch__failf(L, http_errno_name(e), "http: %s", http_errno_description(e));
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* p:finish(): the peer closed its side; a request that needs no more bytes
 * is complete, anything else is an error. */
static int hp_finish(lua_State *L) {
  hparser *h = check_parser(L, 1);
  orch__check_nargs(L, 1);
  if (h->state == S_DONE) { push_request(L, h); return 1; }
  if (h->state != S_FAILED) {
    http_parser_execute(&h->p, &settings, NULL, 0);
    if (h->state == S_DONE) { push_request(L, h); return 1; }
  }
  h->state = S_FAILED;
  return orch__failf(L, "HPE_INVALID_EOF_STATE", "http: the request ended early");
}

static int hp_close(lua_State *L) {
  hparser *h = luaL_checkudata(L, 1, PARSER_MT);
  if (h->open) {
    h->open = 0;
    free(h->buf);
    h->buf = NULL;
    h->len = h->cap = 0;
  }
  return 0;
}

static int hp_tostring(lua_State *L) {
  hparser *h = luaL_checkudata(L, 1, PARSER_MT);
  static const char *const names[] = { "reading the head", "complete", "failed" };
  if (!h->open) lua_pushliteral(L, "orch.HttpParser: closed");
  else lua_pushfstring(L, "orch.HttpParser: %s, %d bytes held", names[h->state], (int)h->cap);
  return 1;
}

int orch__open_httpparse(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"feed", hp_feed}, {"finish", hp_finish}, {"close", hp_close}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", hp_close}, {"__close", hp_close}, {"__tostring", hp_tostring}, {NULL, NULL}
  };
  orch__newclass(L, PARSER_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = { {"request", hp_request}, {NULL, NULL} };
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "httpparse");
  return 1;
}

/* http_core.c - see http_core.h.  llhttp does the parsing; this file keeps
 * the limits it does not (sizes, counts), picks the route, and formats
 * the responses. */
#include "http_core.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char plaintext[] = "Hello, World!";
static const char json[] = "{\"message\":\"Hello, World!\"}";

uint32_t http_fnv1a(uint32_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
  return h;
}

int http_out_put(http_out *o, const void *p, size_t n) {
  if (o->failed) return -1;
  if (o->len + n > o->cap) {
    size_t cap = o->cap ? o->cap : 512;
    while (cap < o->len + n) cap *= 2;
    char *b = realloc(o->buf, cap);
    if (!b) {
      o->failed = 1;
      return -1;
    }
    o->buf = b;
    o->cap = cap;
  }
  memcpy(o->buf + o->len, p, n);
  o->len += n;
  return 0;
}

void http_out_free(http_out *o) {
  free(o->buf);
  memset(o, 0, sizeof(*o));
}

static int put_str(http_out *o, const char *s) {
  return http_out_put(o, s, strlen(s));
}

void http_date_line(long long t, char *buf) {
  time_t tt = (time_t)t;
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(buf, 40, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

long http_decode_path(const char *src, size_t n, char *dst, size_t cap) {
  size_t j = 0;
  for (size_t i = 0; i < n && src[i] != '?' && src[i] != '#'; i++) {
    char ch = src[i];
    if (ch == '%') {
      int hi = i + 2 < n ? hexval(src[i + 1]) : -1;
      int lo = hi >= 0 ? hexval(src[i + 2]) : -1;
      if (lo < 0) return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    }
    if (ch == '\0' || j + 1 >= cap) return -1;
    dst[j++] = ch;
  }
  dst[j] = '\0';
  return (long)j;
}

static const char *reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Error";
  }
}

/* The status line and headers; the body (len bytes) is the caller's. */
static void head(http_conn *c, int status, const char *type, uint64_t len,
                 const char *extra) {
  http_out *o = c->out;
  char line[256];
  int keep10 = !c->closing && llhttp_get_http_major(&c->parser) == 1 &&
               llhttp_get_http_minor(&c->parser) == 0;
  snprintf(line, sizeof(line),
           "HTTP/1.1 %d %s\r\nServer: ursa\r\nContent-Type: %s\r\n"
           "Content-Length: %llu\r\n%s",
           status, reason(status), type, (unsigned long long)len,
           c->closing ? "Connection: close\r\n"
           : keep10   ? "Connection: keep-alive\r\n"
                      : "");
  put_str(o, line);
  if (c->cfg->date) put_str(o, c->cfg->date);
  if (extra) put_str(o, extra);
  put_str(o, "\r\n");
  c->counts.by_class[status / 100 < 6 ? status / 100 : 5]++;
}

static void simple(http_conn *c, int status, const char *type,
                   const char *body, size_t len, int body_too,
                   const char *extra) {
  head(c, status, type, len, extra);
  if (body_too) http_out_put(c->out, body, len);
}

/* A status with its own line as the body ("404 Not Found\n"). */
static void status_page(http_conn *c, int status, int body_too,
                        const char *extra) {
  char body[64];
  int n = snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
  simple(c, status, "text/plain", body, (size_t)n, body_too, extra);
}

/* An error answered, and the connection closes after it. */
static void fail(http_conn *c, int status) {
  c->closing = 1;
  status_page(c, status, 1, NULL);
}

static const char *content_type(const char *path) {
  const char *dot = strrchr(path, '.');
  static const char *const map[][2] = {
      {".html", "text/html"},        {".htm", "text/html"},
      {".txt", "text/plain"},        {".css", "text/css"},
      {".js", "application/javascript"},
      {".json", "application/json"}, {".png", "image/png"},
      {".jpg", "image/jpeg"},        {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},         {".svg", "image/svg+xml"},
      {".ico", "image/x-icon"}};
  if (dot && !strchr(dot, '/'))
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
      if (!strcasecmp(dot, map[i][0])) return map[i][1];
  return "application/octet-stream";
}

/* rel (no ".." in it) under root, with no symlink on the way: openat2
 * where the kernel has it (5.6), otherwise (or where a sandbox refuses it:
 * ENOSYS) one component at a time with O_NOFOLLOW, which refuses a
 * symlink at each step as RESOLVE_NO_SYMLINKS would. */
static int open_beneath(int root, const char *rel) {
  struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                    RESOLVE_NO_MAGICLINKS};
  int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof(how));
  if (fd >= 0 || errno != ENOSYS) return fd;
  char part[256];
  int dir = root;
  for (const char *p = rel;;) {
    while (*p == '/') p++;
    const char *e = strchr(p, '/');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == 0 || n >= sizeof(part)) {
      if (dir != root) close(dir);
      errno = n ? ENAMETOOLONG : EISDIR;
      return -1;
    }
    memcpy(part, p, n);
    part[n] = '\0';
    int last = !e || !e[strspn(e, "/")];
    fd = openat(dir, part,
                O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW |
                    (last ? 0 : O_DIRECTORY));
    int err = errno;
    if (dir != root) close(dir);
    if (fd < 0) {
      errno = err;
      return -1;
    }
    if (last) return fd;
    dir = fd;
    p = e;
  }
}

/* A file under the root.  The kernel does the confinement: openat2 with
 * RESOLVE_BENEATH refuses any path that leaves the root ("..", absolute
 * symlinks) and RESOLVE_NO_SYMLINKS any symlink at all, so neither an
 * encoded dot nor a link planted in the root reaches outside it. */
static void serve_file(http_conn *c, int is_head) {
  char path[4096];
  long n = http_decode_path(c->url, c->url_len, path, sizeof(path));
  if (n < 1 || path[0] != '/') {
    fail(c, 400);
    return;
  }
  const char *rel = path + 1;
  if (!*rel) rel = "index.html";
  /* ".." never names anything the server would serve: refused before the
   * kernel is asked. */
  for (const char *p = rel; *p;) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.') {
      status_page(c, 403, !is_head, NULL);
      return;
    }
    p += len + (e ? 1 : 0);
  }
  int fd = open_beneath(c->cfg->root_fd, rel);
  int err = fd < 0 ? errno : 0;
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) < 0) err = errno;
  if (!err && !S_ISREG(st.st_mode)) err = EISDIR;
  if (!err && (uint64_t)st.st_size > c->cfg->max_file) err = EFBIG;
  if (err) {
    if (fd >= 0) close(fd);
    int status = err == ENOENT || err == ENOTDIR ? 404
                 : err == EMFILE || err == ENFILE || err == ENOMEM ? 500
                                                                  : 403;
    status_page(c, status, !is_head, NULL);
    return;
  }
  size_t before = c->out->len;
  head(c, 200, content_type(rel), (uint64_t)st.st_size, NULL);
  if (!is_head && st.st_size > 0) {
    size_t size = (size_t)st.st_size, at = c->out->len, got = 0;
    /* Room for the whole file, then read straight into it. */
    if (http_out_put(c->out, "", 0) == 0 && c->out->cap - at < size) {
      size_t cap = c->out->cap;
      while (cap - at < size) cap *= 2;
      char *b = realloc(c->out->buf, cap);
      if (!b) c->out->failed = 1;
      else {
        c->out->buf = b;
        c->out->cap = cap;
      }
    }
    while (!c->out->failed && got < size) {
      ssize_t r = pread(fd, c->out->buf + at + got, size - got, (off_t)got);
      if (r <= 0) break;
      got += (size_t)r;
    }
    if (got < size) {
      /* The file shrank or failed under us: what was promised cannot be
       * sent, so the response goes and a 500 closes instead. */
      c->out->len = before;
      c->counts.by_class[2]--;
      close(fd);
      fail(c, 500);
      return;
    }
    c->out->len = at + size;
  }
  close(fd);
}

/* The two fixed routes' whole responses for a kept-alive HTTP/1.1 GET,
 * made once per Date line (per second) on each thread, so that the common
 * case is one copy instead of formatting the headers each time. */
static __thread struct {
  char date[48];
  char plain[256], json[256];
  size_t plain_len, json_len;
} fixed;

static int fast_path(http_conn *c, int json_route) {
  const char *date = c->cfg->date ? c->cfg->date : "";
  if (strcmp(fixed.date, date) != 0) {
    snprintf(fixed.date, sizeof(fixed.date), "%s", date);
    fixed.plain_len = (size_t)snprintf(
        fixed.plain, sizeof(fixed.plain),
        "HTTP/1.1 200 OK\r\nServer: ursa\r\nContent-Type: text/plain\r\n"
        "Content-Length: %zu\r\n%s\r\n%s",
        sizeof(plaintext) - 1, date, plaintext);
    fixed.json_len = (size_t)snprintf(
        fixed.json, sizeof(fixed.json),
        "HTTP/1.1 200 OK\r\nServer: ursa\r\nContent-Type: "
        "application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
        sizeof(json) - 1, date, json);
  }
  c->counts.by_class[2]++;
  return json_route ? http_out_put(c->out, fixed.json, fixed.json_len)
                    : http_out_put(c->out, fixed.plain, fixed.plain_len);
}

static void respond(http_conn *c) {
  int m = llhttp_get_method(&c->parser);
  int is_head = m == HTTP_HEAD, is_get = m == HTTP_GET || is_head;
  size_t ul = c->url_len;
  const char *u = c->url ? c->url : "";
  size_t pl = 0;
  while (pl < ul && u[pl] != '?' && u[pl] != '#') pl++;
  c->counts.requests++;
  int plain_route = pl == 10 && !memcmp(u, "/plaintext", 10);
  int json_route = pl == 5 && !memcmp(u, "/json", 5);
  if ((plain_route || json_route) && m == HTTP_GET && !c->closing &&
      llhttp_get_http_minor(&c->parser) == 1) {
    fast_path(c, json_route);
    return;
  }
  if ((plain_route || json_route) && !is_get) {
    status_page(c, 405, 1, "Allow: GET, HEAD\r\n");
  } else if (plain_route) {
    simple(c, 200, "text/plain", plaintext, sizeof(plaintext) - 1, !is_head,
           NULL);
  } else if (json_route) {
    simple(c, 200, "application/json", json, sizeof(json) - 1, !is_head,
           NULL);
  } else if (pl == 7 && !memcmp(u, "/upload", 7)) {
    if (m != HTTP_POST && m != HTTP_PUT) {
      status_page(c, 405, !is_head, "Allow: POST, PUT\r\n");
    } else {
      char body[64];
      int n = snprintf(body, sizeof(body), "bytes=%llu fnv1a=%08x\n",
                       (unsigned long long)c->body_bytes, c->body_hash);
      simple(c, 200, "text/plain", body, (size_t)n, 1, NULL);
    }
  } else if (c->cfg->root_fd >= 0 && is_get) {
    serve_file(c, is_head);
  } else if (c->cfg->root_fd >= 0) {
    status_page(c, 405, 1, "Allow: GET, HEAD\r\n");
  } else {
    status_page(c, 404, !is_head, NULL);
  }
}

static http_conn *of(llhttp_t *p) { return p->data; }

static int limit(http_conn *c, int status) {
  c->status = status;
  return HPE_USER;
}

static int on_message_begin(llhttp_t *p) {
  http_conn *c = of(p);
  c->in_request = c->in_headers = 1;
  c->url_len = c->header_bytes = c->field_len = 0;
  c->headers = 0;
  c->field_expect = c->expect_continue = 0;
  c->body_bytes = 0;
  c->body_hash = 2166136261u;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = of(p);
  if (c->url_len + n > c->cfg->max_url) return limit(c, 414);
  if (c->url_len + n > c->url_cap) {
    size_t cap = c->url_cap ? c->url_cap : 256;
    while (cap < c->url_len + n) cap *= 2;
    char *u = realloc(c->url, cap);
    if (!u) return limit(c, 500);
    c->url = u;
    c->url_cap = cap;
  }
  memcpy(c->url + c->url_len, at, n);
  c->url_len += n;
  c->header_bytes += n;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = of(p);
  c->header_bytes += n;
  if (c->header_bytes > c->cfg->max_header_bytes) return limit(c, 431);
  for (size_t i = 0; i < n && c->field_len < sizeof(c->field) - 1; i++) {
    char ch = at[i];
    c->field[c->field_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  http_conn *c = of(p);
  c->field[c->field_len] = '\0';
  c->field_expect = !strcmp(c->field, "expect");
  c->field_len = 0;
  c->header_bytes += 4; /* ": " and CRLF */
  if (++c->headers > c->cfg->max_headers) return limit(c, 431);
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = of(p);
  c->header_bytes += n;
  if (c->header_bytes > c->cfg->max_header_bytes) return limit(c, 431);
  if (c->field_expect && n >= 12 && !strncasecmp(at, "100-continue", 12))
    c->expect_continue = 1;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  http_conn *c = of(p);
  c->in_headers = 0;
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->cfg->max_body)
    return limit(c, 413);
  if (c->expect_continue) {
    /* The client waits for this before it sends the body. */
    put_str(c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    c->counts.by_class[1]++;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = of(p);
  c->body_bytes += n;
  if (c->body_bytes > c->cfg->max_body) return limit(c, 413);
  c->body_hash = http_fnv1a(c->body_hash, at, n);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  http_conn *c = of(p);
  if (!llhttp_should_keep_alive(p) || llhttp_get_upgrade(p))
    c->closing = 1;
  respond(c);
  c->in_request = 0;
  /* Nothing after a closing response is read. */
  return c->closing ? HPE_PAUSED : 0;
}

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void) {
  llhttp_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_field_complete = on_header_field_complete;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
}

void http_conn_init(http_conn *c, const http_cfg *cfg) {
  pthread_once(&settings_once, settings_init);
  memset(c, 0, sizeof(*c));
  c->cfg = cfg;
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
}

void http_conn_free(http_conn *c) {
  free(c->url);
  c->url = NULL;
  c->url_cap = 0;
}

int http_conn_feed(http_conn *c, const char *data, size_t n, http_out *out) {
  if (c->closing) return 1;
  c->out = out;
  llhttp_errno_t e = llhttp_execute(&c->parser, data, n);
  if (e == HPE_PAUSED_UPGRADE) {
    c->closing = 1; /* answered as plain HTTP/1.1; no protocol switch */
  } else if (e != HPE_OK && e != HPE_PAUSED) {
    /* A limit a callback hit (llhttp reports a callback's refusal as
     * HPE_USER from a data callback, HPE_CB_* from the others), or the
     * parser's own 400. */
    fail(c, c->status ? c->status : 400);
  }
  if (c->closing) c->in_request = c->in_headers = 0;
  c->out = NULL;
  return c->closing || out->failed;
}

void http_conn_timeout(http_conn *c, http_out *out) {
  if (c->closing) return;
  c->out = out;
  fail(c, 408);
  c->in_request = c->in_headers = 0;
  c->out = NULL;
}

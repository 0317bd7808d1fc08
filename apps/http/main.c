/* ursa-http - an HTTP/1.1 server on ursa: http_core (llhttp) for the
 * protocol, one ursa loop per thread (SO_REUSEPORT between them) for the
 * connections.  Each read is parsed at once and every response it
 * completes goes out in one write, so pipelined requests cost one send
 * per batch; a second batch waits for the first's write.
 *
 * Files never block the loop: a request for one stops the parse (reading
 * stops too, the rest of the input kept), the file is opened (O_NONBLOCK:
 * a FIFO answers at once), stat'ed, and its body read by ursa's file
 * requests (the ring's own on io_uring, the work pool's on epoll): a
 * small one into the response buffer behind its headers, one send; a
 * larger one is one file write on the stream (ursa_write_file: sendfile
 * from the page cache where it is cached, else the library's 128 KiB
 * reads), which holds no more of the file than that however slowly the
 * peer reads.  Then the parse goes on. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apps/common/cli.h"
#include "apps/common/loops.h"
#include "apps/http/http_core.h"
#include "ursa/ursa.h"

#define PROG "ursa-http"
/* Reading pauses while this many response bytes wait behind a write. */
#define OUT_HIGH (4u << 20)
/* A closing connection's last bytes are read and dropped this long. */
#define LINGER_MS 2000
/* A file body up to this size is read behind its headers and sent with
 * them (one send); a larger one is a file write of its own. */
#define CHUNK (128u << 10)

typedef struct opts {
  const char *listen, *backend, *root, *stats_json;
  long threads, cpu;
  uint32_t uring_enable; /* opt-in URSA_FEAT_* bits */
  double duration, header_timeout, idle_timeout, body_timeout, send_timeout;
  http_cfg cfg;
  ursa_addr addr;
  int stop_fd;
} opts;

/* The file a connection is answering. */
typedef struct hfile {
  ursa_fs_req req; /* open, statx, one read at a time, close */
  ursa_work open_work; /* the open, where openat2 is missing */
  int open_res;
  int fd;
  struct statx stx;
  uint64_t off, left; /* the next byte to read, the bytes still to read */
  http_out head;      /* the responses before it, its headers (and a small
                         body) */
  ursa_write_req hw;
  int head_writing;
  ursa_write_req body; /* a larger body: one file write */
  int writes;          /* the body's write is out */
  int short_body;      /* the file ended before its promised length */
} hfile;

typedef struct hconn {
  ursa_stream s;
  http_conn h;
  http_out out;      /* responses waiting */
  http_out inflight; /* responses being written */
  ursa_write_req w;
  int writing, close_after, closing, paused, discarding, peer_eof;
  int in_file;  /* a file request is being answered: reading stopped */
  int full;     /* the parse stopped at OUT_HIGH of responses: the rest of
                   the input waits in pend until they are written */
  int fs_busy;  /* one of ursa's file requests holds f */
  int gone;     /* closed while fs_busy: freed by the request's callback */
  hfile *f;     /* from the first file request on */
  char *pend;   /* input after a file request, parsed once it is answered */
  size_t pend_len, pend_cap;
  uint64_t last_ms, hdr_since;
  uint64_t begun;     /* the parser's request count the header clock saw */
  uint64_t send_ms;   /* when sending last made progress */
  uint64_t queued;    /* bytes ever handed to the stream's writes */
  uint64_t sent_seen; /* of them, sent when the sweep last looked */
  struct hconn *prev, *next;
} hconn;

typedef struct totals {
  uint64_t connections, requests, by_class[6], timeouts;
} totals;

static opts O;
static loop_group G;
static totals T[LOOPS_MAX];

/* One loop's state, on its thread. */
static __thread struct {
  int index, stopping;
  ursa_loop *loop;
  ursa_listener listener;
  ursa_timer sweep;
  ursa_poll stopper;
  hconn *conns;
  http_cfg cfg; /* O.cfg with this thread's Date line */
  char date[48];
  long long date_sec;
  uint64_t deadline;
  totals *t;
} S;

static void close_conn(hconn *c);
static void flush(hconn *c);
static void on_read(ursa_stream *s, ssize_t n, const void *buf);

static void free_conn(hconn *c) {
  if (c->f) {
    if (c->f->fd >= 0) close(c->f->fd); /* only after a failure */
    http_out_free(&c->f->head);
    free(c->f);
  }
  http_conn_free(&c->h);
  http_out_free(&c->out);
  http_out_free(&c->inflight);
  free(c->pend);
  free(c);
}

static void on_closed(ursa_handle *h) {
  hconn *c = h->data;
  if (c->prev) c->prev->next = c->next;
  else S.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  S.t->requests += c->h.counts.requests;
  for (int i = 0; i < 6; i++) S.t->by_class[i] += c->h.counts.by_class[i];
  loop_group_count(&G, S.index, -1);
  /* A file request still out refers to c: its callback frees it. */
  if (c->fs_busy)
    c->gone = 1;
  else
    free_conn(c);
}

static void close_conn(hconn *c) {
  if (c->closing) return;
  c->closing = 1;
  ursa_stream_close(&c->s, on_closed);
}

/* After the last response: FIN, then what the peer still sends is read
 * and dropped until it closes (closing with bytes unread would reset the
 * connection and could destroy the response in flight). */
static void on_shut(ursa_stream *s, int status) {
  hconn *c = s->data;
  if (status < 0 || c->peer_eof) {
    close_conn(c);
    return;
  }
  c->discarding = 1;
  ursa_read_timeout(s, LINGER_MS);
  if (c->paused) {
    c->paused = 0;
    if (ursa_read_start(s, on_read) < 0) close_conn(c);
  }
}

static void finish(hconn *c) {
  if (ursa_shutdown(&c->s, on_shut) < 0) close_conn(c);
}

/* Every response written and no file under way: the connection ends here
 * if it is to. */
static void maybe_finish(hconn *c) {
  if (c->writing || c->out.len || c->in_file) return;
  if (c->close_after || c->peer_eof) finish(c);
}

static void resume_input(hconn *c);

static void on_written(ursa_write_req *w, int status) {
  hconn *c = w->data;
  c->writing = 0;
  c->inflight.len = 0;
  if (status < 0 || c->closing) {
    close_conn(c);
    return;
  }
  if (c->out.len) {
    flush(c);
  } else if (c->full) {
    resume_input(c);
  } else {
    maybe_finish(c);
  }
}

static void flush(hconn *c) {
  if (c->out.failed) {
    close_conn(c);
    return;
  }
  /* While a file is answered, what follows it waits (its writes are
   * queued on the stream behind the file's). */
  if (c->writing || !c->out.len || c->in_file) return;
  http_out t = c->inflight;
  c->inflight = c->out;
  c->out = t;
  c->out.len = 0;
  c->w = (ursa_write_req){0};
  c->w.data = c;
  c->writing = 1;
  c->queued += c->inflight.len;
  if (ursa_write(&c->w, &c->s, c->inflight.buf, c->inflight.len, 0,
                 on_written) < 0) {
    c->writing = 0;
    close_conn(c);
    return;
  }
  if (c->paused && !c->close_after && !c->full) {
    c->paused = 0;
    if (ursa_read_start(&c->s, on_read) < 0) close_conn(c);
  }
}

/* ---- answering a file ---- */

static void start_file(hconn *c);

/* Keeps the input after where the parse stopped (buf may be pend
 * itself); -1 (the connection closed) when there is no memory. */
static int keep_rest(hconn *c, const char *buf, size_t n) {
  size_t rest = n - c->h.fed;
  if (rest) {
    if (c->pend_cap < rest) {
      char *p = malloc(rest);
      if (!p) {
        close_conn(c);
        return -1;
      }
      memcpy(p, buf + c->h.fed, rest); /* before buf (if pend) goes */
      free(c->pend);
      c->pend = p;
      c->pend_cap = rest;
    } else {
      memmove(c->pend, buf + c->h.fed, rest);
    }
  }
  c->pend_len = rest;
  return 0;
}

/* Parses input on from buf: responses to out, a file request to its
 * answer, and a parse that stopped with OUT_HIGH of responses waits for
 * them to go (either way the rest of buf is kept for after). */
static void take_input(hconn *c, const char *buf, size_t n) {
  int done = http_conn_feed(&c->h, buf, n, &c->out);
  /* The header clock runs from each request's first byte (the read it
   * came in), not across the requests a read ends and begins. */
  if (c->h.in_headers) {
    if (!c->hdr_since || c->h.begun != c->begun) c->hdr_since = c->last_ms;
  } else {
    c->hdr_since = 0;
  }
  c->begun = c->h.begun;
  if (done == HTTP_FEED_FILE || done == HTTP_FEED_FULL) {
    if (keep_rest(c, buf, n) < 0) return;
    if (done == HTTP_FEED_FILE) {
      start_file(c);
      return;
    }
    c->full = 1;
    ursa_read_stop(&c->s);
    flush(c);
    return;
  }
  if (done) c->close_after = 1;
  flush(c);
}

/* The responses a full parse waited on are written: the input kept is
 * parsed, then reading goes on. */
static void resume_input(hconn *c) {
  c->full = 0;
  if (c->pend_len) {
    size_t n = c->pend_len;
    c->pend_len = 0;
    take_input(c, c->pend, n);
    if (c->in_file || c->closing || c->full) return;
  }
  if (!c->close_after && !c->discarding && !c->paused &&
      ursa_read_start(&c->s, on_read) < 0) {
    close_conn(c);
    return;
  }
  maybe_finish(c);
}

/* The file is answered (or given up: short_body): what was kept is
 * parsed, and reading goes on. */
static void file_done(hconn *c) {
  hfile *f = c->f;
  c->in_file = 0;
  if (f->short_body || c->h.closing) {
    /* A body cut short cannot be framed: the connection ends after it. */
    c->close_after = 1;
    c->pend_len = 0;
  }
  if (c->pend_len && !c->close_after) {
    size_t n = c->pend_len;
    c->pend_len = 0;
    take_input(c, c->pend, n);
    if (c->in_file || c->closing) return;
  }
  if (!c->close_after && !c->discarding && !c->paused) {
    if (ursa_read_start(&c->s, on_read) < 0) {
      close_conn(c);
      return;
    }
  }
  flush(c);
  maybe_finish(c);
}

/* A file request's callback begins here: false when the connection went
 * meanwhile (then c may be freed). */
static int fs_back(hconn *c) {
  c->fs_busy = 0;
  if (!c->closing) return 1;
  if (c->gone) free_conn(c);
  return 0;
}

static void on_fclosed(ursa_fs_req *req, int res) {
  hconn *c = req->data;
  (void)res;
  if (fs_back(c)) file_done(c);
}

static void file_close(hconn *c) {
  hfile *f = c->f;
  int fd = f->fd;
  f->fd = -1;
  if (fd < 0) {
    file_done(c);
    return;
  }
  c->fs_busy = 1;
  if (ursa_fs_close(S.loop, &f->req, fd, on_fclosed) < 0) {
    c->fs_busy = 0;
    close(fd);
    file_done(c);
  }
}

/* Every byte read and written: the file is closed. */
static void file_maybe_end(hconn *c) {
  hfile *f = c->f;
  if (f->writes || f->head_writing || c->fs_busy) return;
  file_close(c);
}

static void on_head_written(ursa_write_req *w, int status) {
  hconn *c = w->data;
  c->f->head_writing = 0;
  c->f->head.len = 0;
  if (status < 0 || c->closing) {
    close_conn(c);
    return;
  }
  file_maybe_end(c);
}

static void write_head(hconn *c) {
  hfile *f = c->f;
  if (f->head.failed) {
    close_conn(c);
    return;
  }
  if (!f->head.len) return;
  f->hw = (ursa_write_req){0};
  f->hw.data = c;
  f->head_writing = 1;
  c->queued += f->head.len;
  if (ursa_write(&f->hw, &c->s, f->head.buf, f->head.len, 0,
                 on_head_written) < 0) {
    f->head_writing = 0;
    close_conn(c);
  }
}

/* The body of a larger file: one file write on the stream, behind the
 * headers (sendfile from the page cache, or the library's own 128 KiB
 * reads; see ursa_write_file). */
static void on_body_written(ursa_write_req *w, int status) {
  hconn *c = w->data;
  hfile *f = c->f;
  f->writes = 0;
  f->left = 0;
  if (status == -ENODATA) {
    f->short_body = 1; /* the file shrank: closed after what went */
  } else if (status < 0 || c->closing) {
    close_conn(c);
    return;
  }
  file_maybe_end(c);
}

static void write_body(hconn *c) {
  hfile *f = c->f;
  if (!f->left) return;
  f->body = (ursa_write_req){0};
  f->body.data = c;
  f->writes = 1;
  c->queued += f->left;
  if (ursa_write_file(&f->body, &c->s, f->fd, (int64_t)f->off,
                      (size_t)f->left, on_body_written) < 0) {
    f->writes = 0;
    close_conn(c);
  }
}

/* A small body, read behind its headers in the head buffer. */
static void on_small(ursa_fs_req *req, int res) {
  hconn *c = req->data;
  if (!fs_back(c)) return;
  hfile *f = c->f;
  if (res <= 0) {
    f->short_body = 1;
    f->left = 0;
  } else {
    f->head.len += (size_t)res;
    f->off += (uint64_t)res;
    f->left -= (uint64_t)res;
  }
  if (f->left) {
    c->fs_busy = 1;
    if (ursa_fs_read(S.loop, &f->req, f->fd, f->head.buf + f->head.len,
                     (size_t)f->left, (int64_t)f->off, on_small) < 0) {
      c->fs_busy = 0;
      close_conn(c);
    }
    return;
  }
  write_head(c);
  file_maybe_end(c);
}

/* What open and statx found: the headers, then the body. */
static void answer(hconn *c, int err) {
  hfile *f = c->f;
  http_file_info fi = {.err = err};
  if (!err) {
    fi.regular = S_ISREG(f->stx.stx_mode);
    fi.size = f->stx.stx_size;
    fi.ino = f->stx.stx_ino;
    fi.mtime_sec = f->stx.stx_mtime.tv_sec;
    fi.mtime_nsec = f->stx.stx_mtime.tv_nsec;
  }
  /* The responses before this one go first, in the same buffer. */
  http_out t = f->head;
  f->head = c->out;
  c->out = t;
  c->out.len = 0;
  uint64_t off, len;
  http_file_head(&c->h, &fi, &f->head, &off, &len);
  f->off = off;
  f->left = len;
  if (len && len <= CHUNK && http_out_put(&f->head, "", 0) == 0) {
    if (f->head.cap - f->head.len < len) {
      size_t cap = f->head.cap;
      while (cap - f->head.len < len) cap *= 2;
      char *b = realloc(f->head.buf, cap);
      if (!b) {
        close_conn(c);
        return;
      }
      f->head.buf = b;
      f->head.cap = cap;
    }
    c->fs_busy = 1;
    if (ursa_fs_read(S.loop, &f->req, f->fd, f->head.buf + f->head.len,
                     (size_t)len, (int64_t)off, on_small) < 0) {
      c->fs_busy = 0;
      close_conn(c);
    }
    return;
  }
  write_head(c);
  write_body(c);
  file_maybe_end(c);
}

static void on_fstat(ursa_fs_req *req, int res) {
  hconn *c = req->data;
  if (fs_back(c)) answer(c, res < 0 ? -res : 0);
}

static void opened(hconn *c, int res) {
  hfile *f = c->f;
  if (res < 0) {
    answer(c, -res);
    return;
  }
  f->fd = res;
  c->fs_busy = 1;
  /* The attributes the kernel has (a network file system's cached ones:
   * no round trip): asked at once, not through the ring or the pool. */
  if (ursa_fs_statx(S.loop, &f->req, res, "",
                    AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS,
                    &f->stx, on_fstat) < 0) {
    c->fs_busy = 0;
    answer(c, EIO);
  }
}

/* Where openat2 is missing: the component walk, on the work pool (O is
 * the process's; S is the loop thread's own). */
static void open_walk(ursa_work *w) {
  hconn *c = w->data;
  int fd = http_open_beneath(O.cfg.root_fd, c->h.file->path);
  c->f->open_res = fd < 0 ? -errno : fd;
}

static void on_walked(ursa_work *w, int status) {
  hconn *c = w->data;
  if (!fs_back(c)) {
    if (status == 0 && c->f->open_res >= 0) close(c->f->open_res);
    return;
  }
  opened(c, status < 0 ? status : c->f->open_res);
}

static void on_fopen(ursa_fs_req *req, int res) {
  hconn *c = req->data;
  if (!fs_back(c)) {
    if (res >= 0) close(res);
    return;
  }
  if (res == -ENOSYS) {
    hfile *f = c->f;
    f->open_work = (ursa_work){0};
    f->open_work.data = c;
    c->fs_busy = 1;
    if (ursa_work_queue(S.loop, &f->open_work, open_walk, on_walked) == 0)
      return;
    c->fs_busy = 0;
  }
  opened(c, res);
}

/* A file request stopped the parse: reading stops too until it is
 * answered (the input after it is in c->pend). */
static void start_file(hconn *c) {
  hfile *f = c->f;
  if (!f) {
    if (!(f = c->f = calloc(1, sizeof(*f)))) {
      close_conn(c);
      return;
    }
  }
  f->fd = -1;
  f->writes = 0;
  f->short_body = 0;
  f->req = (ursa_fs_req){0};
  f->req.data = c;
  c->in_file = 1;
  c->hdr_since = 0;
  ursa_read_stop(&c->s);
  c->fs_busy = 1;
  int r = ursa_fs_open(S.loop, &f->req, O.cfg.root_fd, c->h.file->path,
                       O_RDONLY | O_NONBLOCK | O_NOCTTY, 0,
                       RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                           RESOLVE_NO_MAGICLINKS,
                       on_fopen);
  if (r < 0) {
    c->fs_busy = 0;
    answer(c, -r);
  }
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  hconn *c = s->data;
  if (n < 0) {
    if (n == -ETIMEDOUT) S.t->timeouts++;
    if (n != URSA_EOF || c->discarding || c->close_after) {
      close_conn(c);
      return;
    }
    /* The peer is done sending: answer what it asked, then go. */
    c->peer_eof = 1;
    if (!c->writing && !c->out.len && !c->in_file) close_conn(c);
    return;
  }
  if (c->discarding || c->close_after || c->in_file || c->full) return;
  c->last_ms = ursa_loop_now(S.loop);
  take_input(c, buf, (size_t)n);
  if (!c->closing && !c->in_file && c->writing && c->out.len >= OUT_HIGH &&
      !c->paused) {
    c->paused = 1;
    ursa_read_stop(s);
  }
}

static void on_connection(ursa_listener *l, int status) {
  if (status < 0) {
    if (status != -EMFILE && status != -ENFILE)
      fprintf(stderr, PROG ": accept: %s\n", ursa_strerror(status));
    return;
  }
  hconn *c = calloc(1, sizeof(*c));
  if (!c) return;
  if (ursa_accept(l, &c->s) < 0) {
    free(c);
    return;
  }
  c->s.data = c;
  http_conn_init(&c->h, &S.cfg);
  c->next = S.conns;
  if (S.conns) S.conns->prev = c;
  S.conns = c;
  S.t->connections++;
  loop_group_count(&G, S.index, 1);
  c->last_ms = c->send_ms = ursa_loop_now(S.loop);
  if (S.stopping || ursa_read_start(&c->s, on_read) < 0) close_conn(c);
}

static void begin_stop(void) {
  if (S.stopping) return;
  S.stopping = 1;
  loop_group_stop(&G, S.index);
  ursa_timer_stop(&S.sweep);
  if (S.index == 0) ursa_poll_close(&S.stopper, NULL);
  ursa_listener_close(&S.listener, NULL);
  for (hconn *c = S.conns; c; c = c->next) close_conn(c);
}

static void on_group_stop(loop_group *g, int i, void *arg) {
  (void)g;
  (void)i;
  (void)arg;
  begin_stop();
}

static void set_date(void) {
  long long now = (long long)time(NULL);
  if (now == S.date_sec) return;
  S.date_sec = now;
  http_date_line(now, S.date);
}

/* Every 100 ms: the Date line (formatted once a second), the header
 * timeout (a request's header section begun and not finished: 408), the
 * idle timeout (no request under way: closed), and --duration. */
static void on_sweep(ursa_timer *t, int status) {
  (void)t;
  if (status < 0 || S.stopping) return;
  set_date();
  uint64_t now = ursa_loop_now(S.loop);
  uint64_t hdr_ms = (uint64_t)(O.header_timeout * 1000),
           idle_ms = (uint64_t)(O.idle_timeout * 1000),
           body_ms = (uint64_t)(O.body_timeout * 1000),
           send_ms = (uint64_t)(O.send_timeout * 1000);
  for (hconn *c = S.conns, *next; c; c = next) {
    next = c->next;
    if (c->closing) continue;
    /* Send: no byte of the responses left for send_ms (a peer that does
     * not read) closes the connection, as nginx's send_timeout does.  The
     * bytes sent so far (handed over less still queued) only grow. */
    size_t left = ursa_write_queue_size(&c->s);
    uint64_t sent = c->queued - left;
    if (!left || sent != c->sent_seen) {
      c->sent_seen = sent;
      c->send_ms = now;
    } else if (send_ms && now - c->send_ms >= send_ms) {
      S.t->timeouts++;
      close_conn(c);
      continue;
    }
    if (c->close_after || c->in_file) continue;
    if (c->h.in_body && body_ms && !c->paused && !c->full &&
        now - c->last_ms >= body_ms) {
      /* Body: nothing of an announced body for body_ms: 408. */
      S.t->timeouts++;
      http_conn_timeout(&c->h, &c->out);
      c->close_after = 1;
      if (c->writing || c->out.len) flush(c);
      else finish(c);
    } else if (c->hdr_since && now - c->hdr_since >= hdr_ms) {
      S.t->timeouts++;
      http_conn_timeout(&c->h, &c->out);
      c->close_after = 1;
      c->hdr_since = 0;
      if (c->writing || c->out.len) flush(c);
      else finish(c);
    } else if (idle_ms && !c->h.in_request && !c->writing && !c->out.len &&
               now - c->last_ms >= idle_ms) {
      S.t->timeouts++;
      finish(c);
    }
  }
  if (S.deadline && now >= S.deadline) begin_stop();
}

static void on_stop_fd(ursa_poll *p, int status, unsigned events) {
  (void)p;
  (void)status;
  (void)events;
  begin_stop();
}

static int serve(loop_group *g, int index, void *arg) {
  (void)arg;
  memset(&S, 0, sizeof(S));
  S.index = index;
  S.t = &T[index];
  S.cfg = O.cfg;
  S.cfg.date = S.date;
  S.date_sec = -1;
  set_date();
  ursa_loop_options lo = {0};
  lo.backend = !strcmp(O.backend, "uring") ? URSA_BACKEND_URING
                                           : URSA_BACKEND_EPOLL;
  lo.enable = O.uring_enable;
  /* Direct descriptors save a lookup per operation, but a file write
   * needs a descriptor of the stream's own for sendfile (without one it
   * reads the file through a buffer): none when serving files. */
  lo.direct_files = O.root ? 0 : 65536;
  int r = ursa_loop_new(&S.loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, PROG ": the %s backend cannot start: %s\n", O.backend,
            why);
    if (g->n > 1) loop_group_fail(g);
    return 2;
  }
  if (g->n > 1) loop_group_join(g, index, S.loop);
  struct sockaddr_storage first, bound;
  socklen_t salen = O.addr.len, bl = 0;
  const struct sockaddr *sa = (const struct sockaddr *)&O.addr.ss;
  r = 0;
  if (index > 0) {
    if (loop_group_address(g, &first, &salen) < 0) r = -ECANCELED;
    sa = (const struct sockaddr *)&first;
  }
  if (!r)
    r = ursa_listen(S.loop, &S.listener, sa, salen, 0,
                    URSA_LISTEN_NODELAY |
                        (g->n > 1 ? URSA_LISTEN_REUSEPORT : 0),
                    on_connection);
  if (!r) r = ursa_listener_addr(&S.listener, &bound, &bl);
  if (r < 0) {
    if (r != -ECANCELED)
      fprintf(stderr, PROG ": cannot listen on %s: %s\n", O.listen,
              ursa_strerror(r));
    if (g->n > 1) loop_group_fail(g);
    ursa_loop_close(S.loop);
    return 2;
  }
  if (g->n > 1 && (index == 0 ? loop_group_publish(g, &bound, bl)
                              : loop_group_ready(g)) < 0) {
    begin_stop();
    ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
    ursa_loop_close(S.loop);
    return 2;
  }
  if (index == 0) {
    char name[160];
    ursa_addr_format((struct sockaddr *)&bound, bl, name, sizeof(name));
    printf(PROG ": %s, %ld thread%s, listening on %s\n", O.backend,
           O.threads, O.threads > 1 ? "s" : "", name);
    fflush(stdout);
    ursa_poll_open(S.loop, &S.stopper, O.stop_fd);
    ursa_poll_start(&S.stopper, URSA_READABLE, on_stop_fd);
  }
  if (O.duration > 0)
    S.deadline = ursa_loop_now(S.loop) + (uint64_t)(O.duration * 1000);
  ursa_timer_start(S.loop, &S.sweep, 100, 100, on_sweep);
  r = ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
  if (r < 0) fprintf(stderr, PROG ": loop failed: %s\n", ursa_strerror(r));
  if (ursa_loop_close(S.loop) < 0) r = -EBUSY;
  return r < 0 ? 1 : 0;
}

static int bad(const char *fmt, const char *a) {
  fprintf(stderr, PROG ": ");
  fprintf(stderr, fmt, a);
  fprintf(stderr, " (see --help)\n");
  return 2;
}

static void usage(void) {
  char opt_in[128];
  ursa_feature_list(URSA_FEAT_OPT_IN, opt_in, sizeof(opt_in));
  printf(
      "usage: " PROG " [options]\n"
      "  --listen ADDR          where to listen (default 127.0.0.1:8080;\n"
      "                         :PORT for every address, [::1]:PORT, ...)\n"
      "  --backend B            uring (default) or ursa-epoll\n"
      "  --uring-enable LIST    opt-in io_uring features to use: %s\n"
      "  --threads N            loops on N threads, SO_REUSEPORT (1-64)\n"
      "  --cpu N                pin the process to CPU N\n"
      "  --root DIR             serve the regular files under DIR, any "
      "size,\n"
      "                         streamed (no way out of it: no '..', no "
      "symlinks;\n"
      "                         Range, If-None-Match, If-Modified-Since)\n"
      "  --max-url BYTES        request target (default 8192): 414\n"
      "  --max-header-bytes N   request line and headers (default 16384): "
      "431\n"
      "  --max-headers N        header fields (default 100): 431\n"
      "  --max-body BYTES       request body (default 8388608): 413\n"
      "  --header-timeout S     a request's headers must be in within S\n"
      "                         seconds of its first byte (default 10): "
      "408\n"
      "  --idle-timeout S       a connection with no request for S seconds\n"
      "                         is closed (default 60; 0: never)\n"
      "  --body-timeout S       nothing of a request's body for S seconds: "
      "408\n"
      "                         (default 60; 0: never)\n"
      "  --send-timeout S       no byte of the responses taken by the peer "
      "for\n"
      "                         S seconds: closed (default 60; 0: never)\n"
      "  --duration S           stop after S seconds (default: at "
      "SIGINT/SIGTERM)\n"
      "  --stats-json FILE      counters as JSON at exit\n"
      "  -h, --help             this text\n"
      "Routes: GET/HEAD /plaintext, /json; POST/PUT /upload (answers the\n"
      "body's length and CRC-32); other paths from --root.\n",
      opt_in);
}

static int parse(int argc, char **argv) {
  O.listen = "127.0.0.1:8080";
  O.backend = "uring";
  O.threads = 1;
  O.cpu = -1;
  O.header_timeout = 10;
  O.idle_timeout = 60;
  O.body_timeout = 60;
  O.send_timeout = 60;
  O.cfg = (http_cfg){.max_url = 8192, .max_header_bytes = 16384,
                     .max_headers = 100, .max_body = 8u << 20,
                     .max_out = OUT_HIGH, .root_fd = -1};
  static const struct option longs[] = {
      {"listen", required_argument, NULL, 'l'},
      {"backend", required_argument, NULL, 'b'},
      {"uring-enable", required_argument, NULL, 'E'},
      {"threads", required_argument, NULL, 't'},
      {"cpu", required_argument, NULL, 'c'},
      {"root", required_argument, NULL, 'r'},
      {"max-url", required_argument, NULL, 'U'},
      {"max-header-bytes", required_argument, NULL, 'H'},
      {"max-headers", required_argument, NULL, 'N'},
      {"max-body", required_argument, NULL, 'B'},
      {"header-timeout", required_argument, NULL, 'T'},
      {"idle-timeout", required_argument, NULL, 'I'},
      {"body-timeout", required_argument, NULL, 'Y'},
      {"send-timeout", required_argument, NULL, 'S'},
      {"duration", required_argument, NULL, 'd'},
      {"stats-json", required_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *flag, *v;
  int ch;
  long x;
  while ((ch = cli_next(PROG, argc, argv, "h", longs, &flag, &v)) != 0) {
    switch (ch) {
      case -1: return 2;
      case 'h': usage(); return 1;
      case 'l': O.listen = v; break;
      case 'b':
        if (strcmp(v, "uring") && strcmp(v, "ursa-epoll"))
          return bad("unknown --backend '%s' (want uring or ursa-epoll)", v);
        O.backend = v;
        break;
      case 'E':
        if (cli_opt_in(PROG, flag, v, URSA_FEAT_OPT_IN, &O.uring_enable) < 0)
          return 2;
        break;
      case 't':
        if (cli_long(PROG, flag, v, 1, LOOPS_MAX, &O.threads) < 0) return 2;
        break;
      case 'c':
        if (cli_long(PROG, flag, v, 0, 4095, &O.cpu) < 0) return 2;
        break;
      case 'r': O.root = v; break;
      case 'U':
        if (cli_long(PROG, flag, v, 16, 1 << 20, &x) < 0) return 2;
        O.cfg.max_url = (size_t)x;
        break;
      case 'H':
        if (cli_long(PROG, flag, v, 256, 1 << 24, &x) < 0) return 2;
        O.cfg.max_header_bytes = (size_t)x;
        break;
      case 'N':
        if (cli_long(PROG, flag, v, 1, 100000, &x) < 0) return 2;
        O.cfg.max_headers = (unsigned)x;
        break;
      case 'B':
        if (cli_long(PROG, flag, v, 0, 1L << 40, &x) < 0) return 2;
        O.cfg.max_body = (uint64_t)x;
        break;
      case 'T':
        if (cli_seconds(PROG, flag, v, 0.05, 86400, &O.header_timeout) < 0)
          return 2;
        break;
      case 'I':
        if (cli_seconds(PROG, flag, v, 0, 86400, &O.idle_timeout) < 0)
          return 2;
        break;
      case 'Y':
        if (cli_seconds(PROG, flag, v, 0, 86400, &O.body_timeout) < 0)
          return 2;
        break;
      case 'S':
        if (cli_seconds(PROG, flag, v, 0, 86400, &O.send_timeout) < 0)
          return 2;
        break;
      case 'd':
        if (cli_seconds(PROG, flag, v, 0.01, 1e7, &O.duration) < 0) return 2;
        break;
      case 'j': O.stats_json = v; break;
    }
  }
  if (optind < argc) return bad("unexpected argument '%s'", argv[optind]);
  if (ursa_addr_parse(O.listen, &O.addr) < 0) {
    fprintf(stderr, PROG ": bad --listen '%s': %s\n", O.listen,
            ursa_error_detail());
    return 2;
  }
  if (O.stats_json) {
    /* Refused now, not found out at exit after the run. */
    FILE *f = fopen(O.stats_json, "a");
    if (!f) {
      fprintf(stderr, PROG ": --stats-json '%s': %s\n", O.stats_json,
              strerror(errno));
      return 2;
    }
    fclose(f);
  }
  if (O.root) {
    O.cfg.root_fd = open(O.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (O.cfg.root_fd < 0) {
      fprintf(stderr, PROG ": --root '%s': %s\n", O.root, strerror(errno));
      return 2;
    }
  }
  return 0;
}

static int report(void) {
  totals t = {0};
  for (int i = 0; i < LOOPS_MAX; i++) {
    t.connections += T[i].connections;
    t.requests += T[i].requests;
    t.timeouts += T[i].timeouts;
    for (int k = 0; k < 6; k++) t.by_class[k] += T[i].by_class[k];
  }
  printf(PROG ": %llu connections, %llu requests, responses 1xx %llu 2xx "
         "%llu 3xx %llu 4xx %llu 5xx %llu, %llu timed out\n",
         (unsigned long long)t.connections, (unsigned long long)t.requests,
         (unsigned long long)t.by_class[1], (unsigned long long)t.by_class[2],
         (unsigned long long)t.by_class[3], (unsigned long long)t.by_class[4],
         (unsigned long long)t.by_class[5], (unsigned long long)t.timeouts);
  if (!O.stats_json) return 0;
  FILE *f = fopen(O.stats_json, "w");
  if (!f) {
    fprintf(stderr, PROG ": cannot write %s: %s\n", O.stats_json,
            strerror(errno));
    return -1;
  }
  fprintf(f,
          "{\"backend\":\"%s\",\"threads\":%ld,\"connections\":%llu,"
          "\"requests\":%llu,\"responses_1xx\":%llu,\"responses_2xx\":%llu,"
          "\"responses_4xx\":%llu,\"responses_5xx\":%llu,"
          "\"timed_out\":%llu}\n",
          O.backend, O.threads, (unsigned long long)t.connections,
          (unsigned long long)t.requests, (unsigned long long)t.by_class[1],
          (unsigned long long)t.by_class[2], (unsigned long long)t.by_class[4],
          (unsigned long long)t.by_class[5], (unsigned long long)t.timeouts);
  if (fclose(f) != 0) {
    fprintf(stderr, PROG ": cannot write %s: %s\n", O.stats_json,
            strerror(errno));
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  int r = parse(argc, argv);
  if (r) return r == 1 ? 0 : r;
  if (O.cpu >= 0 && cli_pin(PROG, O.cpu) < 0) return 2;
  O.stop_fd = cli_stop_fd(PROG);
  if (O.stop_fd < 0) return 1;
  int rc = loop_group_run(&G, (int)O.threads, serve, on_group_stop, NULL);
  if (report() < 0 && rc == 0) rc = 1;
  if (O.cfg.root_fd >= 0) close(O.cfg.root_fd);
  close(O.stop_fd);
  return rc;
}

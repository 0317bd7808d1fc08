// http_core_test.cc - ursa-http's protocol side without sockets: pipelining,
// a request split at every byte, each limit's status, 100-continue, HEAD,
// the header timeout, Connection: close, the path decoder, and file
// requests: the feed stops at each, and the answer's status and headers
// (200, 206, 304, 416, 403, 404) and body for what the caller found.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

extern "C" {
#include "apps/http/http_core.h"
}

namespace {

http_cfg Cfg() {
  http_cfg c{};
  c.max_url = 64;
  c.max_header_bytes = 512;
  c.max_headers = 8;
  c.max_body = 1000;
  c.root_fd = -1;
  c.date = "Date: Tue, 01 Dec 2026 00:00:00 GMT\r\n";
  return c;
}

struct Conn {
  http_cfg cfg = Cfg();
  http_conn c;
  http_out out{};
  Conn() { http_conn_init(&c, &cfg); }
  ~Conn() {
    http_conn_free(&c);
    http_out_free(&out);
  }
  int Feed(const std::string &s) {
    return http_conn_feed(&c, s.data(), s.size(), &out);
  }
  std::string Out() const { return std::string(out.buf ? out.buf : "", out.len); }
};

int Count(const std::string &s, const std::string &what) {
  int n = 0;
  for (size_t at = s.find(what); at != std::string::npos;
       at = s.find(what, at + 1))
    n++;
  return n;
}

const char kGet[] = "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
const char kJson[] = "GET /json HTTP/1.1\r\nHost: x\r\n\r\n";

// The bound on waiting responses holds inside one feed: the parse stops
// after the request that reaches it, says where, and the rest parses in
// a later feed; every request is answered once, in order.
TEST(HttpCore, AFullOutStopsTheFeedInsideARead) {
  Conn k;
  k.cfg.max_out = 300;
  std::string in;
  for (int i = 0; i < 10; i++) in += kGet;
  size_t at = 0;
  int stops = 0;
  for (int guard = 0; guard < 20 && at < in.size(); guard++) {
    int r = k.Feed(in.substr(at));
    if (r == HTTP_FEED_FULL) {
      stops++;
      EXPECT_GE(k.out.len, 300u);
      ASSERT_GT(k.c.fed, 0u);
      EXPECT_EQ(0u, k.c.fed % (sizeof(kGet) - 1)) << "a request boundary";
      at += k.c.fed;
      k.out.len = 0;  // written
    } else {
      ASSERT_EQ(0, r);
      at = in.size();
    }
  }
  EXPECT_GE(stops, 2);
  EXPECT_EQ(10u, k.c.counts.requests);
}

// RFC 9112's MUSTs llhttp leaves to the server, and 501/505.
TEST(HttpCore, RequestsRfc9112Refuses) {
  const struct {
    const char *req;
    int status;
  } cases[] = {
      {"GET /plaintext HTTP/1.1\r\n\r\n", 400},             // no Host
      {"GET /plaintext HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400},
      {"GET /plaintext HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
      {"GET /plaintext HTTP/1.1\r\nHost : x\r\n\r\n", 400},
      {"GET /plaintext HTTP/1.1\r\nHost: x\r\n: y\r\n\r\n", 400},
      {"GET /plaintext HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"FOO /plaintext HTTP/1.1\r\nHost: x\r\n\r\n", 501},
      {"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, "
       "chunked\r\n\r\n", 501},
      {"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
       "chunked\r\n\r\nffffffffffffffff\r\n", 413},
      {"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
  };
  for (const auto &t : cases) {
    Conn k;
    EXPECT_EQ(1, k.Feed(t.req)) << t.req;
    EXPECT_EQ(0u, k.Out().find("HTTP/1.1 " + std::to_string(t.status)))
        << t.req << " -> " << k.Out();
  }
  // What it must accept: absolute form, HTTP/1.2 (as 1.1), HTTP/1.0
  // without Host, and 100-continue only when exact and HTTP/1.1.
  const char *ok[] = {
      "GET http://x/plaintext HTTP/1.1\r\nHost: y\r\n\r\n",
      "GET /plaintext HTTP/1.2\r\nHost: x\r\n\r\n",
      "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
  };
  for (const char *r : ok) {
    Conn k;
    EXPECT_EQ(0, k.Feed(r)) << r;
    EXPECT_EQ(0u, k.Out().find("HTTP/1.1 200")) << r << " -> " << k.Out();
    EXPECT_NE(std::string::npos, k.Out().find("Hello, World!")) << r;
  }
  Conn x;
  EXPECT_EQ(0, x.Feed("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "
                      "2\r\nExpect: 100-continueXYZ\r\n\r\nhi"));
  EXPECT_EQ(std::string::npos, x.Out().find("100 Continue")) << x.Out();
  Conn y;
  EXPECT_EQ(1, y.Feed("POST /upload HTTP/1.0\r\nContent-Length: 2\r\n"
                      "Expect: 100-continue\r\n\r\nhi"));
  EXPECT_EQ(std::string::npos, y.Out().find("100 Continue")) << y.Out();
  EXPECT_NE(std::string::npos, y.Out().find("bytes=2")) << y.Out();
}

TEST(HttpCore, PipelinedRequestsAnsweredInOrder) {
  Conn k;
  EXPECT_EQ(k.Feed(std::string(kGet) + kJson + kGet), 0);
  std::string o = k.Out();
  size_t a = o.find("Hello, World!"), b = o.find("{\"message\""),
         c = o.rfind("Hello, World!");
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(Count(o, "HTTP/1.1 200 OK\r\n"), 3);
  EXPECT_EQ(k.c.counts.requests, 3u);
}

TEST(HttpCore, SplitAtEveryByteGivesTheSameAnswer) {
  std::string req = std::string("POST /upload HTTP/1.1\r\nHost: x\r\n") +
                    "Transfer-Encoding: chunked\r\n\r\n" +
                    "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n" + kGet;
  Conn whole;
  ASSERT_EQ(whole.Feed(req), 0);
  std::string want = whole.Out();
  ASSERT_NE(want.find("bytes=8 crc32="), std::string::npos);
  for (size_t i = 1; i < req.size(); i++) {
    Conn k;
    ASSERT_EQ(k.Feed(req.substr(0, i)), 0) << i;
    ASSERT_EQ(k.Feed(req.substr(i)), 0) << i;
    ASSERT_EQ(k.Out(), want) << "split at " << i;
  }
}

TEST(HttpCore, UploadChecksumIsCrc32OfTheBody) {
  Conn k;
  ASSERT_EQ(k.Feed("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            0);
  char want[64];
  snprintf(want, sizeof(want), "bytes=5 crc32=%08x\n",
           http_crc32(0, "hello", 5));
  EXPECT_NE(k.Out().find(want), std::string::npos) << k.Out();
  // CRC-32's value for "hello" (zlib.crc32 in Python agrees).
  EXPECT_EQ(http_crc32(0, "hello", 5), 0x3610a686u);
  EXPECT_EQ(http_crc32(http_crc32(0, "hel", 3), "lo", 2), 0x3610a686u);
}

struct LimitCase {
  std::string req;
  int status;
};

TEST(HttpCore, EachLimitAnswersItsStatusAndCloses) {
  std::vector<LimitCase> cases = {
      {"GET /" + std::string(100, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(600, 'b') + "\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
       "G: 1\r\nH: 1\r\nI: 1\r\n\r\n",
       431},
      {"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413},
      {"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3e9\r\n" + std::string(1001, 'z') + "\r\n0\r\n\r\n",
       413},
      {"NOT A REQUEST\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
  };
  for (const auto &lc : cases) {
    Conn k;
    EXPECT_EQ(k.Feed(lc.req), 1) << lc.req.substr(0, 40);
    std::string o = k.Out();
    EXPECT_EQ(o.compare(0, 12, "HTTP/1.1 " + std::to_string(lc.status)), 0)
        << lc.req.substr(0, 40) << " -> " << o.substr(0, 40);
    EXPECT_NE(o.find("Connection: close\r\n"), std::string::npos);
    // Nothing more is read once closing.
    size_t before = k.out.len;
    EXPECT_EQ(k.Feed(kGet), 1);
    EXPECT_EQ(k.out.len, before);
  }
}

TEST(HttpCore, ExpectContinueComesBeforeTheBody) {
  Conn k;
  ASSERT_EQ(k.Feed("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                   "Expect: 100-continue\r\n\r\n"),
            0);
  EXPECT_EQ(k.Out(), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(k.Feed("abc"), 0);
  EXPECT_NE(k.Out().find("bytes=3 "), std::string::npos);
}

TEST(HttpCore, OversizeBodyGetsNoContinue) {
  Conn k;
  EXPECT_EQ(k.Feed("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                   "Expect: 100-continue\r\n\r\n"),
            1);
  EXPECT_EQ(k.Out().find("100 Continue"), std::string::npos);
  EXPECT_EQ(k.Out().compare(0, 12, "HTTP/1.1 413"), 0);
}

TEST(HttpCore, TheFixedRoutesBytesExactly) {
  // GET takes the prebuilt response, HEAD the general path: the same
  // header either way, and the body after it.
  const std::string head =
      "HTTP/1.1 200 OK\r\nServer: ursa\r\nContent-Type: text/plain\r\n"
      "Content-Length: 13\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
  Conn g;
  ASSERT_EQ(g.Feed(kGet), 0);
  EXPECT_EQ(g.Out(), head + "Hello, World!");
  Conn h;
  ASSERT_EQ(h.Feed("HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
  EXPECT_EQ(h.Out(), head);
  Conn j;
  ASSERT_EQ(j.Feed(kJson), 0);
  EXPECT_EQ(j.Out(),
            "HTTP/1.1 200 OK\r\nServer: ursa\r\nContent-Type: "
            "application/json\r\nContent-Length: 27\r\nDate: Tue, 01 Dec "
            "2026 00:00:00 GMT\r\n\r\n{\"message\":\"Hello, World!\"}");
  // A new Date line is picked up by the next response.
  Conn k;
  k.cfg.date = "Date: Wed, 02 Dec 2026 00:00:01 GMT\r\n";
  ASSERT_EQ(k.Feed(kGet), 0);
  EXPECT_NE(k.Out().find("Wed, 02 Dec 2026 00:00:01"), std::string::npos);
}

TEST(HttpCore, HeadHasTheHeadersAndNoBody) {
  Conn k;
  ASSERT_EQ(k.Feed("HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
  std::string o = k.Out();
  EXPECT_NE(o.find("Content-Length: 13\r\n"), std::string::npos);
  EXPECT_EQ(o.substr(o.size() - 4), "\r\n\r\n");
  EXPECT_EQ(o.find("Hello"), std::string::npos);
}

TEST(HttpCore, ConnectionCloseEndsThePipeline) {
  Conn k;
  EXPECT_EQ(k.Feed(std::string("GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               "\r\n") + kGet),
            1);
  EXPECT_EQ(Count(k.Out(), "HTTP/1.1 "), 1);
  EXPECT_NE(k.Out().find("Connection: close"), std::string::npos);
}

TEST(HttpCore, Http10ClosesUnlessKeptAlive) {
  Conn a;
  EXPECT_EQ(a.Feed("GET /plaintext HTTP/1.0\r\n\r\n"), 1);
  Conn b;
  EXPECT_EQ(b.Feed("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            0);
  EXPECT_NE(b.Out().find("Connection: keep-alive\r\n"), std::string::npos);
}

TEST(HttpCore, HeaderTimeoutAnswers408AndCloses) {
  Conn k;
  ASSERT_EQ(k.Feed("GET /plaintext HTTP/1.1\r\nHost"), 0);
  EXPECT_TRUE(k.c.in_headers);
  http_conn_timeout(&k.c, &k.out);
  EXPECT_EQ(k.Out().compare(0, 12, "HTTP/1.1 408"), 0);
  EXPECT_EQ(k.Feed(": x\r\n\r\n"), 1);
  EXPECT_EQ(Count(k.Out(), "HTTP/1.1 "), 1);
}

TEST(HttpCore, MethodsOutsideARouteAre405WithAllow) {
  Conn k;
  ASSERT_EQ(k.Feed("PUT /json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), 0);
  EXPECT_EQ(k.Out().compare(0, 12, "HTTP/1.1 405"), 0);
  EXPECT_NE(k.Out().find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(k.c.counts.by_class[4], 1u);
}

TEST(HttpCore, NoRootMeansNotFound) {
  Conn k;
  ASSERT_EQ(k.Feed("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
  EXPECT_EQ(k.Out().compare(0, 12, "HTTP/1.1 404"), 0);
}

TEST(HttpCore, DecodePath) {
  char d[16];
  EXPECT_EQ(http_decode_path("/%41b?x=1", 9, d, sizeof(d)), 3);
  EXPECT_STREQ(d, "/Ab");
  EXPECT_EQ(http_decode_path("/%2e%2E/", 8, d, sizeof(d)), 4);
  EXPECT_STREQ(d, "/../");
  EXPECT_EQ(http_decode_path("/%zz", 4, d, sizeof(d)), -1);
  EXPECT_EQ(http_decode_path("/%4", 3, d, sizeof(d)), -1);
  EXPECT_EQ(http_decode_path("/%00", 4, d, sizeof(d)), -1);
  EXPECT_EQ(http_decode_path("/aaaaaaaaaaaaaaaaaaaa", 21, d, sizeof(d)), -1);
}

TEST(HttpCore, DateLine) {
  char b[48];
  http_date_line(0, b);
  EXPECT_STREQ(b, "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
  http_date_line(1796150209LL, b);
  EXPECT_STREQ(b, "Date: Tue, 01 Dec 2026 18:36:49 GMT\r\n");
}

// A file request's answer, from what the caller found (no I/O).
struct FileConn : Conn {
  FileConn() {
    cfg.root_fd = 0; /* any descriptor: only "is there a root" is asked */
  }
  // Feeds req, which must stop at its file request; the head for fi.
  std::string Head(const std::string &req, const http_file_info &fi,
                   uint64_t *off, uint64_t *len) {
    EXPECT_EQ(HTTP_FEED_FILE, Feed(req));
    EXPECT_EQ(req.size(), c.fed);
    size_t before = out.len;
    http_file_head(&c, &fi, &out, off, len);
    return Out().substr(before);
  }
};

http_file_info Info(uint64_t size) {
  http_file_info fi{};
  fi.regular = 1;
  fi.size = size;
  fi.ino = 0x1234;
  fi.mtime_sec = 1796150209; /* Tue, 01 Dec 2026 18:36:49 GMT */
  fi.mtime_nsec = 5;
  return fi;
}

std::string Get(const std::string &path, const std::string &hdrs = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + hdrs + "\r\n";
}

TEST(HttpFile, WholeFileWithValidators) {
  FileConn k;
  uint64_t off = 9, len = 9;
  std::string h = k.Head(Get("/a/b.html"), Info(1000), &off, &len);
  EXPECT_STREQ(k.c.file->path, "a/b.html");
  EXPECT_EQ(0u, off);
  EXPECT_EQ(1000u, len);
  EXPECT_NE(h.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << h;
  EXPECT_NE(h.find("Content-Type: text/html\r\n"), std::string::npos);
  EXPECT_NE(h.find("Content-Length: 1000\r\n"), std::string::npos);
  EXPECT_NE(h.find("Accept-Ranges: bytes\r\n"), std::string::npos);
  EXPECT_NE(h.find("ETag: \"1234-3e8-18ed351942b04a05\"\r\n"),
            std::string::npos) << h;
  EXPECT_NE(h.find("Last-Modified: Tue, 01 Dec 2026 18:36:49 GMT\r\n"),
            std::string::npos);
  EXPECT_EQ(h.size() - 4, h.find("\r\n\r\n")) << "headers only";
}

TEST(HttpFile, RangesAndTheirStatus) {
  struct Case {
    const char *range;
    int status;
    uint64_t off, len;
    const char *content_range;
  } cases[] = {
      {"bytes=0-99", 206, 0, 100, "bytes 0-99/1000"},
      {"bytes=990-", 206, 990, 10, "bytes 990-999/1000"},
      {"bytes=-10", 206, 990, 10, "bytes 990-999/1000"},
      {"bytes=-5000", 206, 0, 1000, "bytes 0-999/1000"},
      {"bytes=500-99999999999999999999999", 206, 500, 500,
       "bytes 500-999/1000"},
      {" bytes = 7-7 ", 206, 7, 1, "bytes 7-7/1000"},
      {"bytes=1000-", 416, 0, 0, "bytes */1000"},
      {"bytes=-0", 416, 0, 0, "bytes */1000"},
      {"bytes=5-2", 200, 0, 1000, nullptr},
      {"bytes=0-1,5-6", 200, 0, 1000, nullptr},
      {"items=0-1", 200, 0, 1000, nullptr},
      {"bytes=x-1", 200, 0, 1000, nullptr},
  };
  for (const Case &t : cases) {
    FileConn k;
    uint64_t off = 9, len = 9;
    std::string h = k.Head(Get("/f", std::string("Range: ") + t.range + "\r\n"),
                           Info(1000), &off, &len);
    EXPECT_EQ(0u, h.find("HTTP/1.1 " + std::to_string(t.status)))
        << t.range << ": " << h;
    EXPECT_EQ(t.off, off) << t.range;
    EXPECT_EQ(t.len, len) << t.range;
    if (t.content_range)
      EXPECT_NE(h.find(std::string("Content-Range: ") + t.content_range +
                       "\r\n"), std::string::npos) << t.range << ": " << h;
    else
      EXPECT_EQ(h.find("Content-Range"), std::string::npos) << t.range;
  }
  // HEAD ignores Range; an empty file has no range at all.
  FileConn k;
  uint64_t off, len;
  std::string h = k.Head("HEAD /f HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n",
                         Info(1000), &off, &len);
  EXPECT_EQ(0u, h.find("HTTP/1.1 200")) << h;
  EXPECT_EQ(0u, len);
  FileConn e;
  h = e.Head(Get("/f", "Range: bytes=0-\r\n"), Info(0), &off, &len);
  EXPECT_EQ(0u, h.find("HTTP/1.1 416")) << h;
}

TEST(HttpFile, ConditionalRequests) {
  const std::string tag = "\"1234-3e8-18ed351942b04a05\"";
  struct Case {
    std::string hdrs;
    int status;
  } cases[] = {
      {"If-None-Match: " + tag + "\r\n", 304},
      {"If-None-Match: W/" + tag + "\r\n", 304},
      {"If-None-Match: \"x\", " + tag + "\r\n", 304},
      {"If-None-Match: \"x\"\r\nIf-None-Match: " + tag + "\r\n", 304},
      {"If-None-Match: *\r\n", 304},
      {"If-None-Match: \"x\"\r\n", 200},
      {"If-Modified-Since: Tue, 01 Dec 2026 18:36:49 GMT\r\n", 304},
      {"If-Modified-Since: Tuesday, 01-Dec-26 18:36:49 GMT\r\n", 304},
      {"If-Modified-Since: Tue Dec  1 18:36:49 2026\r\n", 304},
      {"If-Modified-Since: Tue, 01 Dec 2026 18:36:48 GMT\r\n", 200},
      {"If-Modified-Since: yesterday\r\n", 200},
      {"If-None-Match: \"x\"\r\nIf-Modified-Since: Tue, 01 Dec 2026 "
       "18:36:49 GMT\r\n", 200},
      {"Range: bytes=0-1\r\nIf-Range: " + tag + "\r\n", 206},
      {"Range: bytes=0-1\r\nIf-Range: W/" + tag + "\r\n", 200},
      {"Range: bytes=0-1\r\nIf-Range: \"old\"\r\n", 200},
      {"Range: bytes=0-1\r\nIf-Range: Tue, 01 Dec 2026 18:36:49 GMT\r\n",
       206},
      {"Range: bytes=0-1\r\nIf-Range: Mon, 30 Nov 2026 18:36:49 GMT\r\n",
       200},
  };
  for (const Case &t : cases) {
    FileConn k;
    uint64_t off, len;
    std::string h = k.Head(Get("/f", t.hdrs), Info(1000), &off, &len);
    EXPECT_EQ(0u, h.find("HTTP/1.1 " + std::to_string(t.status)))
        << t.hdrs << ": " << h;
    if (t.status == 304) {
      EXPECT_EQ(0u, len);
      EXPECT_NE(h.find("ETag: " + tag), std::string::npos);
      EXPECT_EQ(h.find("Content-Length"), std::string::npos) << h;
    }
  }
  // A header value too long for its room counts as absent.
  FileConn k;
  uint64_t off, len;
  std::string h = k.Head(Get("/f", "If-None-Match: \"" + std::string(300, 'a') +
                                       "\"\r\n"),
                         Info(1000), &off, &len);
  EXPECT_EQ(0u, h.find("HTTP/1.1 200")) << h;
}

TEST(HttpFile, WhatTheCallerFoundDecidesTheStatus) {
  struct Case {
    int err, regular, status;
  } cases[] = {{ENOENT, 0, 404}, {ENOTDIR, 0, 404}, {EACCES, 0, 403},
               {ELOOP, 0, 403},  {EXDEV, 0, 403},   {EMFILE, 0, 500},
               {0, 0, 403}};
  for (const Case &t : cases) {
    FileConn k;
    http_file_info fi = Info(10);
    fi.err = t.err;
    fi.regular = t.regular;
    uint64_t off, len = 9;
    std::string h = k.Head(Get("/f"), fi, &off, &len);
    EXPECT_EQ(0u, h.find("HTTP/1.1 " + std::to_string(t.status)))
        << t.err << ": " << h;
    EXPECT_EQ(0u, len) << "the status page is the body, in out";
  }
}

// Pipelined: the feed stops at each file request, and what follows is
// answered after it, in order; Connection: close on a file request ends
// the feed after it.
TEST(HttpFile, FeedStopsAtEachFileRequest) {
  FileConn k;
  std::string in = Get("/one.txt") + kGet + Get("/two.txt", "Connection: close\r\n") +
                   kJson;
  size_t at = 0;
  std::vector<std::string> files;
  int r;
  while ((r = k.Feed(in.substr(at))) == HTTP_FEED_FILE) {
    files.push_back(k.c.file->path);
    at += k.c.fed;
    uint64_t off, len;
    http_file_info fi = Info(3);
    http_file_head(&k.c, &fi, &k.out, &off, &len);
    http_out_put(&k.out, "abc", 3);
    if (k.c.closing) break;
  }
  EXPECT_EQ((std::vector<std::string>{"one.txt", "two.txt"}), files);
  EXPECT_TRUE(k.c.closing);
  EXPECT_EQ(1, k.Feed(in.substr(at))) << "nothing after Connection: close";
  std::string o = k.Out();
  size_t a = o.find("abc"), b = o.find("Hello, World!"), c = o.rfind("abc");
  EXPECT_TRUE(a < b && b < c) << o;
  EXPECT_EQ(std::string::npos, o.find("{\"message\"")) << "never answered";
  EXPECT_NE(std::string::npos, o.find("Connection: close")) << o;
}

// Paths: ".." refused before any file is asked for; "/" is index.html.
TEST(HttpFile, PathsCheckedBeforeAsking) {
  FileConn k;
  EXPECT_EQ(0, k.Feed(Get("/a/../b")));
  EXPECT_EQ(0u, k.Out().find("HTTP/1.1 403")) << k.Out();
  FileConn i;
  EXPECT_EQ(HTTP_FEED_FILE, i.Feed(Get("/")));
  EXPECT_STREQ(i.c.file->path, "index.html");
  FileConn n;
  EXPECT_EQ(1, n.Feed(Get("/%00")));
  EXPECT_EQ(0u, n.Out().find("HTTP/1.1 400")) << n.Out();
}

// The blocking answer, for callers without a loop: a real file and a
// FIFO under a real root.
TEST(HttpFile, SyncAnswerReadsTheFileAndRefusesAFifo) {
  char dir[] = "/tmp/ursa-http-core-XXXXXX";
  ASSERT_NE(nullptr, mkdtemp(dir));
  std::string d = dir;
  FILE *f = fopen((d + "/x.txt").c_str(), "w");
  ASSERT_NE(nullptr, f);
  fputs("0123456789", f);
  fclose(f);
  ASSERT_EQ(0, mkfifo((d + "/fifo").c_str(), 0600));
  Conn k;
  k.cfg.root_fd = open(dir, O_RDONLY | O_DIRECTORY);
  ASSERT_GE(k.cfg.root_fd, 0);
  ASSERT_EQ(HTTP_FEED_FILE, k.Feed(Get("/x.txt", "Range: bytes=2-4\r\n")));
  EXPECT_EQ(0, http_file_answer_sync(&k.c, &k.out));
  std::string o = k.Out();
  EXPECT_EQ(0u, o.find("HTTP/1.1 206")) << o;
  // The body alone: "234" may also be in the ETag's hex digits.
  size_t body = o.find("\r\n\r\n");
  ASSERT_NE(std::string::npos, body) << o;
  EXPECT_EQ("234", o.substr(body + 4)) << o;
  ASSERT_EQ(HTTP_FEED_FILE, k.Feed(Get("/fifo")));
  EXPECT_EQ(0, http_file_answer_sync(&k.c, &k.out));
  EXPECT_NE(std::string::npos, k.Out().find("HTTP/1.1 403")) << k.Out();
  close(k.cfg.root_fd);
  std::string rm = "rm -rf '" + d + "'";
  ASSERT_EQ(0, system(rm.c_str()));
}

TEST(HttpFile, ParseDate) {
  EXPECT_EQ(784111777, http_parse_date("Sun, 06 Nov 1994 08:49:37 GMT"));
  EXPECT_EQ(784111777, http_parse_date("Sunday, 06-Nov-94 08:49:37 GMT"));
  EXPECT_EQ(784111777, http_parse_date("Sun Nov  6 08:49:37 1994"));
  EXPECT_EQ(-1, http_parse_date("Sun, 06 Nov 1994 08:49:37 GMT junk"));
  EXPECT_EQ(-1, http_parse_date(""));
}

}  // namespace

// http_core_test.cc - ursa-http's protocol side without sockets: pipelining,
// a request split at every byte, each limit's status, 100-continue, HEAD,
// the header timeout, Connection: close, and the path decoder.
#include <gtest/gtest.h>

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
  c.max_file = 1 << 20;
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
  ASSERT_NE(want.find("bytes=8 fnv1a="), std::string::npos);
  for (size_t i = 1; i < req.size(); i++) {
    Conn k;
    ASSERT_EQ(k.Feed(req.substr(0, i)), 0) << i;
    ASSERT_EQ(k.Feed(req.substr(i)), 0) << i;
    ASSERT_EQ(k.Out(), want) << "split at " << i;
  }
}

TEST(HttpCore, UploadChecksumIsFnv1aOfTheBody) {
  Conn k;
  ASSERT_EQ(k.Feed("POST /upload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            0);
  char want[64];
  snprintf(want, sizeof(want), "bytes=5 fnv1a=%08x\n",
           http_fnv1a(2166136261u, "hello", 5));
  EXPECT_NE(k.Out().find(want), std::string::npos) << k.Out();
  EXPECT_EQ(http_fnv1a(2166136261u, "a", 1), 0xe40c292cu);
}

struct LimitCase {
  std::string req;
  int status;
};

TEST(HttpCore, EachLimitAnswersItsStatusAndCloses) {
  std::vector<LimitCase> cases = {
      {"GET /" + std::string(100, 'a') + " HTTP/1.1\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nX: " + std::string(600, 'b') + "\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
       "G: 1\r\nH: 1\r\nI: 1\r\n\r\n",
       431},
      {"POST /upload HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413},
      {"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3e9\r\n" + std::string(1001, 'z') + "\r\n0\r\n\r\n",
       413},
      {"NOT A REQUEST\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
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
  ASSERT_EQ(k.Feed("POST /upload HTTP/1.1\r\nContent-Length: 3\r\n"
                   "Expect: 100-continue\r\n\r\n"),
            0);
  EXPECT_EQ(k.Out(), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(k.Feed("abc"), 0);
  EXPECT_NE(k.Out().find("bytes=3 "), std::string::npos);
}

TEST(HttpCore, OversizeBodyGetsNoContinue) {
  Conn k;
  EXPECT_EQ(k.Feed("POST /upload HTTP/1.1\r\nContent-Length: 5000\r\n"
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
  ASSERT_EQ(h.Feed("HEAD /plaintext HTTP/1.1\r\n\r\n"), 0);
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
  ASSERT_EQ(k.Feed("HEAD /plaintext HTTP/1.1\r\n\r\n"), 0);
  std::string o = k.Out();
  EXPECT_NE(o.find("Content-Length: 13\r\n"), std::string::npos);
  EXPECT_EQ(o.substr(o.size() - 4), "\r\n\r\n");
  EXPECT_EQ(o.find("Hello"), std::string::npos);
}

TEST(HttpCore, ConnectionCloseEndsThePipeline) {
  Conn k;
  EXPECT_EQ(k.Feed(std::string("GET /json HTTP/1.1\r\nConnection: close\r\n"
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
  ASSERT_EQ(k.Feed("PUT /json HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 0);
  EXPECT_EQ(k.Out().compare(0, 12, "HTTP/1.1 405"), 0);
  EXPECT_NE(k.Out().find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(k.c.counts.by_class[4], 1u);
}

TEST(HttpCore, NoRootMeansNotFound) {
  Conn k;
  ASSERT_EQ(k.Feed("GET /index.html HTTP/1.1\r\n\r\n"), 0);
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

}  // namespace

// testutil.cc - the shared test helpers (see testutil.h).
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <random>

namespace t {

const Variant kVariants[] = {
    {"default", 0},
    // No DEFER_TASKRUN/SINGLE_ISSUER: task work runs as the kernel likes.
    {"plain_setup", URSA_FEAT_DEFER_TASKRUN | URSA_FEAT_SINGLE_ISSUER |
                        URSA_FEAT_COOP_TASKRUN | URSA_FEAT_SUBMIT_ALL |
                        URSA_FEAT_REG_RING_FD},
    // The fallback paths: one accept and one recv per SQE.
    {"single_shot", URSA_FEAT_MULTISHOT_ACCEPT | URSA_FEAT_MULTISHOT_RECV},
    // Accepted streams in direct descriptors, multishot and single-shot.
    {"direct", 0, 1024},
    {"direct_single_shot",
     URSA_FEAT_MULTISHOT_ACCEPT | URSA_FEAT_MULTISHOT_RECV, 1024},
    // Writes of 1 KiB and more sent with SEND_ZC.
    {"zero_copy", 0, 0, 1024},
    // The opt-in receive paths: bundles and buffers filled by parts, each
    // alone and together.
    {"bundles_and_parts", 0, 0, 0, URSA_FEAT_RECV_BUNDLE | URSA_FEAT_BUF_INC},
    {"bundles_only", 0, 0, 0, URSA_FEAT_RECV_BUNDLE},
    {"by_parts_only", 0, 0, 0, URSA_FEAT_BUF_INC},
    // Every wait asks for a batch of completions (min-wait), every path
    // alike; the default variants batch only as URSA_BATCH_AUTO decides.
    {"batched_always", 0, 0, 0, 0, URSA_BACKEND_AUTO, URSA_BATCH_ALWAYS},
    // The same with every wait's argument read from the registered wait
    // region (6.13; where the kernel has none, the copied argument).
    {"batched_reg_wait", 0, 0, 0, URSA_FEAT_REG_WAIT, URSA_BACKEND_AUTO,
     URSA_BATCH_ALWAYS},
    // The library's epoll backend, with its multishot behaviour and with
    // the single-shot paths.
    {"epoll", 0, 0, 0, 0, URSA_BACKEND_EPOLL},
    {"epoll_single_shot",
     URSA_FEAT_MULTISHOT_ACCEPT | URSA_FEAT_MULTISHOT_RECV, 0, 0, 0,
     URSA_BACKEND_EPOLL},
};
const size_t kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);

std::string VariantName(const ::testing::TestParamInfo<Variant> &info) {
  return info.param.name;
}

const ursa_backend kBackends[2] = {URSA_BACKEND_URING, URSA_BACKEND_EPOLL};

std::string BackendName(const ::testing::TestParamInfo<ursa_backend> &info) {
  return info.param == URSA_BACKEND_EPOLL ? "epoll" : "uring";
}

ursa_loop_options OptionsFor(ursa_backend b) {
  ursa_loop_options o{};
  o.backend = b;
  return o;
}

void ApplyVariant(const Variant &v, ursa_loop_options *o) {
  o->disable = v.disable;
  o->direct_files = v.direct_files;
  o->zc_threshold = v.zc_threshold;
  o->enable = v.enable;
  o->batch_policy = v.batch;
  o->backend = v.backend ? v.backend : URSA_BACKEND_URING;
}

socklen_t LoopbackAddr(int family, sockaddr_storage *ss, uint16_t port) {
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET6) {
    auto *a = reinterpret_cast<sockaddr_in6 *>(ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    a->sin6_port = htons(port);
    return sizeof(*a);
  }
  auto *a = reinterpret_cast<sockaddr_in *>(ss);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(port);
  return sizeof(*a);
}

uint16_t PortOf(const sockaddr_storage &ss) {
  if (ss.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6 &>(ss).sin6_port);
  return ntohs(reinterpret_cast<const sockaddr_in &>(ss).sin_port);
}

TempDir::TempDir(const char *prefix) {
  std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  EXPECT_NE(nullptr, mkdtemp(buf.data())) << strerror(errno);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::string cmd = "rm -rf '" + path_ + "'";
  (void)!system(cmd.c_str());
}

uint64_t Checksum(const void *p, size_t n) {
  const unsigned char *b = static_cast<const unsigned char *>(p);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

std::vector<char> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<char> v(n);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t x = rng();
    memcpy(&v[i], &x, 4);
  }
  for (; i < n; i++) v[i] = static_cast<char>(rng());
  return v;
}

bool AllDone(const std::vector<std::unique_ptr<EchoClient>> &clients) {
  for (auto &c : clients)
    if (!c->done()) return false;
  return true;
}

::testing::AssertionResult SameBytes(const std::vector<char> &a,
                                     const std::vector<char> &b) {
  if (a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size()) == 0))
    return ::testing::AssertionSuccess();
  size_t first = 0;
  while (first < a.size() && first < b.size() && a[first] == b[first]) first++;
  return ::testing::AssertionFailure()
         << "lengths " << a.size() << " and " << b.size() << ", checksums "
         << std::hex << Checksum(a.data(), a.size()) << " and "
         << Checksum(b.data(), b.size()) << std::dec
         << ", first difference at byte " << first;
}

// ---- Loop ----

namespace {
struct Guard {
  ursa_timer timer{};
  bool fired = false;
  bool done = false;
};
void OnGuard(ursa_timer *tm, int status) {
  auto *g = static_cast<Guard *>(tm->data);
  g->done = true;
  if (status == 0) {
    g->fired = true;
    ursa_loop_stop(tm->loop);
  }
}
}  // namespace

Loop::Loop(const ursa_loop_options *opts) {
  status_ = ursa_loop_new(&loop_, opts);
}

Loop::~Loop() {
  if (loop_ && ursa_loop_close(loop_) != 0) {
    ADD_FAILURE() << "loop still busy at the end of the test";
  }
}

bool Loop::RunUntil(const std::function<bool()> &done, int ms) {
  Guard g;
  g.timer.data = &g;
  EXPECT_EQ(0, ursa_timer_start(loop_, &g.timer, (uint64_t)ms, 0, OnGuard));
  bool ok = true;
  while (!done()) {
    int r = ursa_loop_run(loop_, URSA_RUN_ONCE);
    if (r < 0) {
      ADD_FAILURE() << "ursa_loop_run: " << ursa_strerror(r);
      ok = false;
      break;
    }
    if (g.fired) {
      ADD_FAILURE() << "timed out after " << ms << " ms";
      ok = false;
      break;
    }
  }
  if (!g.done) ursa_timer_stop(&g.timer);
  while (!g.done) ursa_loop_run(loop_, URSA_RUN_ONCE);
  return ok;
}

void Loop::Finish(int ms) {
  // RunUntil's own guard timer is the one op left once everything ended.
  RunUntil([&] { return ursa_loop_alive(loop_) <= 1; }, ms);
  ASSERT_EQ(0, ursa_loop_alive(loop_)) << "operations still active";
  ursa_stats st;
  ursa_loop_stats(loop_, &st);
  EXPECT_EQ(0u, st.bufs_out) << "receive buffers never went back to the ring";
  ASSERT_EQ(0, ursa_loop_close(loop_)) << "handles left open";
  loop_ = nullptr;
}

namespace {
thread_local int streams_closed;
}  // namespace

bool Loop::CloseStreams(std::initializer_list<ursa_stream *> streams, int ms) {
  streams_closed = 0;
  int want = 0;
  for (ursa_stream *s : streams) {
    int r = ursa_stream_close(s, [](ursa_handle *) { streams_closed++; });
    EXPECT_EQ(0, r) << "ursa_stream_close: " << ursa_strerror(r);
    if (r) return false;
    want++;
  }
  return RunUntil([&] { return streams_closed == want; }, ms);
}

// ---- EchoServer ----

struct EchoServer::Conn {
  ursa_stream s{};
  EchoServer *srv;
  bool closing = false;
};
struct EchoServer::Wr {
  ursa_write_req req{};
  std::vector<char> buf;
};

EchoServer::EchoServer(ursa_loop *loop, int family) : loop_(loop) {
  sockaddr_storage ss;
  socklen_t len = LoopbackAddr(family, &ss);
  Listen(reinterpret_cast<sockaddr *>(&ss), len, 0);
}

EchoServer::EchoServer(ursa_loop *loop, const ursa_addr &at, unsigned flags)
    : loop_(loop) {
  Listen(reinterpret_cast<const sockaddr *>(&at.ss), at.len, flags);
}

void EchoServer::Listen(const sockaddr *sa, socklen_t len, unsigned flags) {
  l_.data = this;
  int r = ursa_listen(loop_, &l_, sa, len, 0, flags, OnConnection);
  EXPECT_EQ(0, r) << ursa_strerror(r) << " " << ursa_error_detail();
  if (r) {
    closed_ = closing_ = true;
    return;
  }
  EXPECT_EQ(0, ursa_listener_addr(&l_, &addr_, &addrlen_));
}

EchoServer::~EchoServer() {
  EXPECT_TRUE(closed()) << "echo server not closed";
}

void EchoServer::OnConnection(ursa_listener *l, int status) {
  auto *srv = static_cast<EchoServer *>(l->data);
  if (status < 0) {
    srv->accept_errors++;
    return;
  }
  auto *c = new Conn;
  c->srv = srv;
  ASSERT_EQ(0, ursa_accept(l, &c->s));
  c->s.data = c;
  srv->accepted++;
  srv->conns_.insert(c);
  ursa_stream_nodelay(&c->s, 1);
  ASSERT_EQ(0, ursa_read_start(&c->s, OnRead));
}

void EchoServer::OnRead(ursa_stream *s, ssize_t n, const void *buf) {
  auto *c = static_cast<Conn *>(s->data);
  if (n > 0) {
    c->srv->bytes += (uint64_t)n;
    auto *w = new Wr;
    w->buf.assign(static_cast<const char *>(buf),
                  static_cast<const char *>(buf) + n);
    w->req.data = w;
    int r = ursa_write(&w->req, s, w->buf.data(), w->buf.size(), 0, OnWrite);
    if (r < 0) delete w;
    return;
  }
  if (n != URSA_EOF) c->srv->read_errors++;
  if (n == URSA_EOF && ursa_shutdown(s, OnShutdown) == 0) return;
  c->closing = true;
  ursa_stream_close(s, OnConnClose);
}

void EchoServer::OnWrite(ursa_write_req *w, int status) {
  (void)status;
  delete static_cast<Wr *>(w->data);
}

void EchoServer::OnShutdown(ursa_stream *s, int status) {
  (void)status;
  auto *c = static_cast<Conn *>(s->data);
  if (!c->closing) {
    c->closing = true;
    ursa_stream_close(s, OnConnClose);
  }
}

void EchoServer::OnConnClose(ursa_handle *h) {
  auto *c = static_cast<Conn *>(h->data);
  c->srv->conns_.erase(c);
  delete c;
}

void EchoServer::OnListenerClose(ursa_handle *h) {
  static_cast<EchoServer *>(h->data)->closed_ = true;
}

void EchoServer::Close() {
  if (closing_) return;
  closing_ = true;
  EXPECT_EQ(0, ursa_listener_close(&l_, OnListenerClose));
  for (Conn *c : conns_) {
    if (!c->closing) {
      c->closing = true;
      ursa_stream_close(&c->s, OnConnClose);
    }
  }
}

// ---- EchoClient ----

EchoClient::EchoClient(ursa_loop *loop, const sockaddr_storage &addr,
                       socklen_t len, std::vector<char> p, size_t chunk,
                       unsigned flags)
    : payload(std::move(p)), chunk_(chunk ? chunk : payload.size()) {
  s_.data = this;
  size_t n = (payload.size() + chunk_ - 1) / chunk_;
  writes_.resize(n);
  int r = ursa_connect(loop, &s_, reinterpret_cast<const sockaddr *>(&addr),
                       len, flags, 5000, OnConnect);
  EXPECT_EQ(0, r) << ursa_strerror(r);
  if (r) closed_ = true;
}

EchoClient::~EchoClient() { EXPECT_TRUE(closed_) << "client not closed"; }

void EchoClient::CloseOnce() {
  if (closing_) return;
  closing_ = true;
  EXPECT_EQ(0, ursa_stream_close(&s_, OnClose));
}

void EchoClient::OnConnect(ursa_stream *s, int status) {
  auto *c = static_cast<EchoClient *>(s->data);
  c->connect_status = status;
  if (status < 0) {
    c->CloseOnce();
    return;
  }
  ursa_stream_nodelay(s, 1);
  EXPECT_EQ(0, ursa_read_start(s, OnRead));
  for (size_t off = 0, i = 0; off < c->payload.size(); off += c->chunk_, i++) {
    size_t n = std::min(c->chunk_, c->payload.size() - off);
    c->writes_[i].data = c;
    int r = ursa_write(&c->writes_[i], s, c->payload.data() + off, n, 0,
                       OnWrite);
    EXPECT_EQ(0, r) << ursa_strerror(r);
    if (r == 0) c->writes_left_++;
  }
}

void EchoClient::OnRead(ursa_stream *s, ssize_t n, const void *buf) {
  auto *c = static_cast<EchoClient *>(s->data);
  if (n < 0) {
    c->read_status = (int)n;
    c->CloseOnce();
    return;
  }
  c->got.insert(c->got.end(), static_cast<const char *>(buf),
                static_cast<const char *>(buf) + n);
  if (c->got.size() >= c->payload.size() && c->writes_left_ == 0)
    c->CloseOnce();
}

void EchoClient::OnWrite(ursa_write_req *w, int status) {
  auto *c = static_cast<EchoClient *>(w->data);
  c->writes_left_--;
  if (status < 0 && !c->write_status) c->write_status = status;
  if (c->got.size() >= c->payload.size() && c->writes_left_ == 0)
    c->CloseOnce();
}

void EchoClient::OnClose(ursa_handle *h) {
  static_cast<EchoClient *>(h->data)->closed_ = true;
}

// ---- blocking peers ----

int BlockingConnect(const sockaddr_storage &ss, socklen_t len) {
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, reinterpret_cast<const sockaddr *>(&ss), len) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

bool ReadExactly(int fd, void *buf, size_t n) {
  char *p = static_cast<char *>(buf);
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

bool WriteAll(int fd, const void *buf, size_t n) {
  const char *p = static_cast<const char *>(buf);
  while (n) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

}  // namespace t

// stream_util.h - what the stream suites share (stream_test for making
// and closing streams, stream_read_test for receiving, stream_write_test
// for sending): the fixture over every ring variant and address family,
// an accepted stream that records what it reads, a blocking peer, and
// the other helpers.
#ifndef URSA_TESTS_STREAM_UTIL_H
#define URSA_TESTS_STREAM_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <algorithm>
#include <memory>
#include <thread>

#include "tests/testutil.h"

namespace st {

using Param = std::tuple<t::Variant, int>;

class Stream : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    t::ApplyVariant(std::get<0>(GetParam()), &opts_);
    Make();
  }
  void Make() {
    loop_.reset(new t::Loop(&opts_));
    ASSERT_EQ(0, loop_->status()) << ursa_strerror(loop_->status());
  }
  void TearDown() override {
    if (loop_ && loop_->get()) loop_->Finish();
  }
  int family() const { return std::get<1>(GetParam()); }
  ursa_loop *loop() { return loop_->get(); }
  bool RunUntil(const std::function<bool()> &f, int ms = 20000) {
    return loop_->RunUntil(f, ms);
  }
  ursa_loop_options opts_{};
  std::unique_ptr<t::Loop> loop_;
};

inline std::string ParamName(const ::testing::TestParamInfo<Param> &info) {
  return std::string(std::get<0>(info.param).name) +
         (std::get<1>(info.param) == AF_INET6 ? "_ipv6" : "_ipv4");
}

// A server-side stream with a plain blocking socket as the peer.
struct Accepted {
  ursa_stream s{};
  bool have = false;
  std::vector<char> got;
  int read_status = 0;
  bool closed = false;
  int shutdown_status = 1;
  void *user = nullptr;
};

inline void AcceptOne(ursa_listener *l, int status) {
  auto *a = static_cast<Accepted *>(l->data);
  if (status < 0 || a->have) return;
  ASSERT_EQ(0, ursa_accept(l, &a->s));
  a->s.data = a;
  a->have = true;
}

inline void ReadInto(ursa_stream *s, ssize_t n, const void *buf) {
  auto *a = static_cast<Accepted *>(s->data);
  if (n < 0) {
    a->read_status = (int)n;
    return;
  }
  a->got.insert(a->got.end(), (const char *)buf, (const char *)buf + n);
}

inline void MarkClosed(ursa_handle *h) {
  static_cast<Accepted *>(h->data)->closed = true;
}

inline void MarkListenerClosed(ursa_handle *h) {
  *static_cast<bool *>(h->data) = true;
}

class Peer {
 public:
  Peer(Stream *, ursa_loop *loop, int family, Accepted *a, unsigned flags = 0)
      : loop_(loop) {
    sockaddr_storage ss;
    socklen_t len = t::LoopbackAddr(family, &ss);
    l_.data = a;
    EXPECT_EQ(0, ursa_listen(loop, &l_, (sockaddr *)&ss, len, 0, flags,
                             AcceptOne));
    socklen_t al;
    EXPECT_EQ(0, ursa_listener_addr(&l_, &addr_, &al));
    fd_ = t::BlockingConnect(addr_, al);
    EXPECT_GE(fd_, 0);
  }
  void CloseListener(t::Loop *lp) {
    bool done = false;
    l_.data = &done;
    ASSERT_EQ(0, ursa_listener_close(&l_, MarkListenerClosed));
    ASSERT_TRUE(lp->RunUntil([&] { return done; }));
  }
  ~Peer() {
    if (fd_ >= 0) close(fd_);
  }
  int fd_ = -1;

 private:
  ursa_loop *loop_;
  ursa_listener l_{};
  sockaddr_storage addr_{};
};

// The write mark: writes past high make the stream not writable; once the
// peer has taken enough that the queue is at low, it is writable again and
// the callback runs, once per crossing.  Every byte arrives.
struct Marked {
  int writable_calls = 0;
  size_t queue_at_call = SIZE_MAX;
};

inline void OnWritable(ursa_stream *s) {
  auto *a = static_cast<Accepted *>(s->data);
  auto *m = static_cast<Marked *>(a->user);
  m->writable_calls++;
  m->queue_at_call = ursa_write_queue_size(s);
  EXPECT_EQ(1, ursa_stream_writable(s));
}

inline bool SameAddr(const sockaddr_storage &a, socklen_t al,
              const sockaddr_storage &b, socklen_t bl) {
  return al == bl && memcmp(&a, &b, al) == 0;
}

struct Counted {
  int calls = 0;
  int last = 1;
  size_t done = 0;
};

inline void CountWrite(ursa_write_req *w, int st) {
  auto *c = static_cast<Counted *>(w->data);
  c->calls++;
  c->last = st;
  c->done = w->done;
}

// Echo without a copy: each read's buffer is kept and written back as it
// is, then released when the write is done.  Beyond buf_keep_max keeping
// fails with -ENOBUFS and the bytes are copied instead; every byte comes
// back in order either way and every buffer returns to the ring.
struct Keeper {
  ursa_stream *s = nullptr;
  int kept = 0, copied = 0, refused = 0;
  int outstanding = 0;
  size_t echoed = 0;
  bool closed = false;
};

struct KeptWrite {
  ursa_write_req req{};
  Keeper *k;
  const void *kept;  // ring buffer to release, or null for a copy
  std::vector<char> copy;
};

inline void EchoKept(ursa_stream *s, ssize_t n, const void *buf) {
  auto *k = static_cast<Keeper *>(s->data);
  if (n <= 0) return;
  auto *w = new KeptWrite;
  w->k = k;
  w->req.data = w;
  int r = ursa_buf_keep(s->loop, buf);
  EXPECT_EQ(-EALREADY, r == 0 ? ursa_buf_keep(s->loop, buf) : -EALREADY);
  const void *out = buf;
  if (r == 0) {
    w->kept = buf;
    k->kept++;
  } else {
    EXPECT_EQ(-ENOBUFS, r) << ursa_err_name(r);
    k->refused++;
    w->kept = nullptr;
    w->copy.assign((const char *)buf, (const char *)buf + n);
    out = w->copy.data();
    k->copied++;
  }
  k->outstanding++;
  k->echoed += (size_t)n;
  ASSERT_EQ(0, ursa_write(&w->req, s, out, (size_t)n, 0,
                          [](ursa_write_req *req, int st) {
                            auto *kw = static_cast<KeptWrite *>(req->data);
                            EXPECT_EQ(0, st);
                            if (kw->kept) {
                              EXPECT_EQ(0, ursa_buf_release(kw->k->s->loop,
                                                            kw->kept));
                            }
                            kw->k->outstanding--;
                            delete kw;
                          }));
}

// Reads as the read callback saw them: where each slice was and its bytes.
struct Slices {
  ursa_stream *s = nullptr;
  std::vector<const char *> at;
  std::vector<size_t> len;
  std::vector<char> got;
  const char *kept = nullptr; // the first slice, kept
  std::vector<char> kept_copy;
  int keep = 0; // keep the first slice
};

inline void RecordSlices(ursa_stream *s, ssize_t n, const void *buf) {
  auto *r = static_cast<Slices *>(s->data);
  if (n <= 0) return;
  const char *p = static_cast<const char *>(buf);
  if (r->keep && !r->kept) {
    ASSERT_EQ(0, ursa_buf_keep(s->loop, p));
    r->kept = p;
    r->kept_copy.assign(p, p + n);
  }
  r->at.push_back(p);
  r->len.push_back((size_t)n);
  r->got.insert(r->got.end(), p, p + n);
}

inline bool Uses(ursa_loop *loop, uint32_t feat) {
  ursa_features f;
  ursa_loop_features(loop, &f);
  return (f.used & feat) != 0;
}

struct ConnectResult {
  ursa_stream s{};
  int status = 1;
  bool closed = false;
};

inline void OnConnectResult(ursa_stream *s, int st) {
  static_cast<ConnectResult *>(s->data)->status = st;
}

inline void OnConnectClosed(ursa_handle *h) {
  static_cast<ConnectResult *>(h->data)->closed = true;
}

// Bad arguments are refused with EINVAL and a reason, never a crash.
class StreamArgs : public ::testing::TestWithParam<ursa_backend> {};

inline void NoteConnect(ursa_stream *s, int st) { *static_cast<int *>(s->data) = st; }

// [::] without URSA_LISTEN_V6ONLY takes IPv4 clients too; with it, not.
class Ipv6 : public ::testing::TestWithParam<ursa_backend> {};

// Writes queued behind a send in flight leave together: with the default
// write_batch (256) or 8, 64 queued writes take far fewer than 64 sends;
// with 1, exactly 64.  Writes of 8 KiB leave at most 256 KiB to a send
// (URSA_SEND_BUDGET), so 64 of them take at least 3.
class WriteBatch : public ::testing::TestWithParam<ursa_backend> {};

struct Bounded {
  ursa_stream s{};
  size_t max_queued = 0;
  uint64_t echoed = 0;
  ssize_t ended = 0; /* the read's final status */
  bool closed = false;
};

inline void EchoBounded(ursa_stream *s, ssize_t n, const void *buf) {
  auto *b = static_cast<Bounded *>(s->data);
  if (n < 0) b->ended = n;
  if (n <= 0) return;
  struct W {
    ursa_write_req req{};
    std::vector<char> data;
  };
  auto *w = new W;
  w->data.assign((const char *)buf, (const char *)buf + n);
  w->req.data = w;
  ASSERT_EQ(0, ursa_write(&w->req, s, w->data.data(), w->data.size(), 0,
                          [](ursa_write_req *r, int) {
                            delete static_cast<W *>(r->data);
                          }));
  b->echoed += (uint64_t)n;
  b->max_queued = std::max(b->max_queued, ursa_write_queue_size(s));
}

// A stream over a socketpair on a loop with a small ring (8 x 16 KiB),
// echoing through EchoBounded; the test plays the peer on peer_
// (non-blocking).  The stream is closed and the loop finished at the end.
class Watermarks : public ::testing::TestWithParam<ursa_backend> {
 protected:
  void SetUp() override {
    ursa_loop_options o = t::OptionsFor(GetParam());
    o.buf_count = 8;
    o.buf_size = 16384;
    lp_.reset(new t::Loop(&o));
    ASSERT_EQ(0, lp_->status());
    int sv[2];
    ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    peer_ = sv[1];
    fcntl(peer_, F_SETFL, O_NONBLOCK);
    ASSERT_EQ(0, ursa_stream_open(lp_->get(), &b_.s, sv[0]));
    b_.s.data = &b_;
  }
  // Sets the marks (and a read timeout unless 0) and starts echoing.
  void Start(size_t high, size_t low, uint32_t timeout_ms = 0) {
    ASSERT_EQ(0, ursa_stream_read_marks(&b_.s, high, low));
    if (timeout_ms) {
      ASSERT_EQ(0, ursa_read_timeout(&b_.s, timeout_ms));
    }
    ASSERT_EQ(0, ursa_read_start(&b_.s, EchoBounded));
  }
  void TearDown() override {
    if (b_.s.loop) {
      ASSERT_EQ(0, ursa_stream_close(&b_.s, [](ursa_handle *h) {
                  static_cast<Bounded *>(h->data)->closed = true;
                }));
      ASSERT_TRUE(lp_->RunUntil([&] { return b_.closed; }));
    }
    if (peer_ >= 0) close(peer_);
    if (lp_ && lp_->get()) lp_->Finish();
  }
  ursa_loop *loop() { return lp_->get(); }
  uint64_t Now() { return ursa_loop_now(loop()); }
  std::unique_ptr<t::Loop> lp_;
  Bounded b_;
  int peer_ = -1;
};

// Joins a reader thread on every way out of a test, failed asserts too:
// shutting the socket down ends a read that still waits.
struct JoinReader {
  std::thread &t;
  int fd;
  ~JoinReader() {
    if (!t.joinable()) return;
    shutdown(fd, SHUT_RDWR);
    t.join();
  }
};

// memcmp for 8 GiB, without the sanitizers' per-byte checks (the bytes
// compared are plain memory the test owns; the sanitizers still watch the
// library that moved them).
__attribute__((no_sanitize("address", "thread", "undefined"))) bool
SameMemory(const char *a, const char *b, size_t n) {
  uint64_t x, y;
  for (; n >= 8; n -= 8, a += 8, b += 8) {
    __builtin_memcpy(&x, a, 8);
    __builtin_memcpy(&y, b, 8);
    if (x != y) return false;
  }
  for (; n; n--)
    if (*a++ != *b++) return false;
  return true;
}

// Writes of 4 GiB and more: a send carries at most what the kernel's
// 32-bit lengths hold, so each goes out in pieces and arrives whole.  The
// first goes alone (4 GiB + 4 KiB); the second (exactly 4 GiB) starts
// alone, and a small write queued behind it later shares its sends.  The
// big buffer is mostly the zero page (untouched private memory), with
// patterns at its start and across the 4 GiB mark; the reader compares
// every byte with what was written.
class BigWrite : public ::testing::TestWithParam<ursa_backend> {};

// A connected pair of plain sockets: AF_UNIX from socketpair, or TCP over
// 127.0.0.1.
inline bool ConnectedPair(int family, int sv[2]) {
  if (family == AF_UNIX)
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0;
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(family, &ss);
  int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (sockaddr *)&ss, len) || listen(l, 1) ||
      getsockname(l, (sockaddr *)&ss, &len))
    return false;
  sv[1] = t::BlockingConnect(ss, len);
  sv[0] = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  close(l);
  return sv[0] >= 0 && sv[1] >= 0;
}

struct Zw {
  ursa_write_req w{};
  int status = 1;
};

inline void ZwDone(ursa_write_req *w, int st) { static_cast<Zw *>(w->data)->status = st; }

// A zero-copy send the kernel refuses (a Unix socket has no zero-copy
// path; a TCP send over RLIMIT_MEMLOCK cannot pin its pages) while a
// cancel or a close is pending ends as cancelled, never as the refusal:
// the stream stays whole and later writes go out.
inline void ZeroCopyRefusalUnderCancel(int family, size_t size, bool low_memlock) {
  ursa_loop_options o{};
  o.zc_threshold = 1024;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa_features f;
  ursa_loop_features(lp.get(), &f);
  if (!(f.used & URSA_FEAT_SEND_ZC)) GTEST_SKIP() << "needs SEND_ZC (6.0)";
  // 4 MiB cannot be pinned under a 256 KiB RLIMIT_MEMLOCK.
  struct rlimit old_rl, low;
  ASSERT_EQ(0, getrlimit(RLIMIT_MEMLOCK, &old_rl));
  low = old_rl;
  low.rlim_cur = 256 << 10;
  if (low_memlock) {
    ASSERT_EQ(0, setrlimit(RLIMIT_MEMLOCK, &low));
  }
  struct Restore {
    rlimit rl;
    ~Restore() { setrlimit(RLIMIT_MEMLOCK, &rl); }
  } restore{old_rl};
  int sv[2];
  ASSERT_TRUE(ConnectedPair(family, sv));
  std::vector<char> first = t::RandomBytes(size, 81),
                    second = t::RandomBytes(size, 82);
  std::vector<char> got;
  std::thread reader([&] {
    std::vector<char> b(1 << 16);
    ssize_t n;
    while ((n = read(sv[1], b.data(), b.size())) > 0)
      got.insert(got.end(), b.data(), b.data() + n);
  });
  JoinReader join{reader, sv[1]};
  ursa_stream s{};
  ASSERT_EQ(0, ursa_stream_open(lp.get(), &s, sv[0]));
  Zw w1, w2, w3;
  w1.w.data = &w1;
  w2.w.data = &w2;
  w3.w.data = &w3;
  ASSERT_EQ(0, ursa_write(&w1.w, &s, first.data(), first.size(), 0, ZwDone));
  ASSERT_EQ(0, ursa_cancel(lp.get(), &w1.w.op));
  ASSERT_TRUE(lp.RunUntil([&] { return w1.status != 1; }));
  EXPECT_TRUE(w1.status == 0 || w1.status == -ECANCELED)
      << ursa_err_name(w1.status);
  ASSERT_EQ(0, ursa_write(&w2.w, &s, second.data(), second.size(), 0, ZwDone))
      << "the stream was torn by a cancelled write";
  ASSERT_TRUE(lp.RunUntil([&] { return w2.status != 1; }));
  EXPECT_EQ(0, w2.status) << ursa_err_name(w2.status);
  // Closed with a write in flight: cancelled (or sent), not refused.
  ASSERT_EQ(0, ursa_write(&w3.w, &s, second.data(), second.size(), 0, ZwDone));
  ASSERT_TRUE(lp.CloseStreams({&s}));
  EXPECT_NE(1, w3.status) << "the write was not called back before close";
  EXPECT_TRUE(w3.status == 0 || w3.status == -ECANCELED)
      << ursa_err_name(w3.status);
  lp.Finish();
  reader.join();
  close(sv[1]);
  // What each write reports as sent is what arrived, in order (a close
  // may cut the last one short).
  std::vector<char> want(first.begin(), first.begin() + w1.w.done);
  EXPECT_EQ(second.size(), w2.w.done);
  want.insert(want.end(), second.begin(), second.begin() + w2.w.done);
  want.insert(want.end(), second.begin(), second.begin() + w3.w.done);
  EXPECT_TRUE(t::SameBytes(want, got));
}

// The suites above that take no ring variant run on each backend.
#define ON_EACH_BACKEND(suite)                                         \
  INSTANTIATE_TEST_SUITE_P(Backends, suite,                            \
                           ::testing::ValuesIn(t::kBackends,           \
                                               t::kBackends + 2),      \
                           t::BackendName)

}  // namespace st

#endif  // URSA_TESTS_STREAM_UTIL_H

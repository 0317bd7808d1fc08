// testutil.h - shared helpers for ursa's tests: a loop fixture that runs
// with a time bound and checks for a clean close, an echo server and an
// echo client on the runtime, and address helpers.
#ifndef URSA_TESTS_TESTUTIL_H
#define URSA_TESTS_TESTUTIL_H

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ursa/ursa.h"

namespace t {

// A ring set-up variant: every stream test runs under each.
struct Variant {
  const char *name;
  uint32_t disable;
  unsigned direct_files; /* accepted streams on direct descriptors */
  unsigned zc_threshold; /* writes this large go zero-copy */
  uint32_t enable;       /* opt-in features */
  ursa_backend backend;  /* 0 (AUTO) for the ring variants */
  ursa_batch_policy batch; /* 0: URSA_BATCH_AUTO, the default */
};
extern const Variant kVariants[];
extern const size_t kNumVariants;
std::string VariantName(const ::testing::TestParamInfo<Variant> &info);
// Both backends, for the suites that do not take the ring variants.
extern const ursa_backend kBackends[2];
std::string BackendName(const ::testing::TestParamInfo<ursa_backend> &info);
// Options for a loop on backend b (everything else the defaults).
ursa_loop_options OptionsFor(ursa_backend b);

// Sets a loop's options as the variant says.
void ApplyVariant(const Variant &v, ursa_loop_options *o);

// 127.0.0.1:0 or [::1]:0.
socklen_t LoopbackAddr(int family, sockaddr_storage *ss, uint16_t port = 0);
uint16_t PortOf(const sockaddr_storage &ss);

// A fresh directory under /tmp (short enough for sun_path), removed with
// everything in it when the object goes.
class TempDir {
 public:
  explicit TempDir(const char *prefix);
  ~TempDir();
  const std::string &path() const { return path_; }

 private:
  std::string path_;
};

// FNV-1a, for reporting what differed.
uint64_t Checksum(const void *p, size_t n);
std::vector<char> RandomBytes(size_t n, uint32_t seed);

// Owns a loop; RunUntil() bounds every wait; Finish() asserts that nothing is
// left active and that the loop closes.
class Loop {
 public:
  explicit Loop(const ursa_loop_options *opts = nullptr);
  ~Loop();
  ursa_loop *get() const { return loop_; }
  int status() const { return status_; }
  // Runs until done() holds; false (and a test failure) after ms.
  bool RunUntil(const std::function<bool()> &done, int ms = 20000);
  // Runs until no operation is active, bounded; asserts a clean close.
  void Finish(int ms = 20000);
  // Closes each stream and runs until every close callback has run (the
  // streams' operations are called back before); false (and a test
  // failure) when a close is refused or does not finish within ms.
  bool CloseStreams(std::initializer_list<ursa_stream *> streams,
                    int ms = 20000);

 private:
  ursa_loop *loop_ = nullptr;
  int status_ = 0;
};

// A test on each ring variant with a loop of its own: SetUp makes it with
// the variant's options, TearDown checks that it ends clean.
class LoopTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    ApplyVariant(GetParam(), &opts_);
    lp_.reset(new Loop(&opts_));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override {
    if (lp_) lp_->Finish();
  }
  ursa_loop *loop() { return lp_->get(); }
  bool RunUntil(const std::function<bool()> &f) { return lp_->RunUntil(f); }
  ursa_loop_options opts_{};
  std::unique_ptr<Loop> lp_;
};

// An echo server on the runtime: echoes every byte back, shuts down its
// side on EOF and closes after.
class EchoServer {
 public:
  EchoServer(ursa_loop *loop, int family);
  // Any address ursa_listen() takes, with its flags (URSA_SEQPACKET, ...).
  EchoServer(ursa_loop *loop, const ursa_addr &at, unsigned flags);
  ~EchoServer();
  const sockaddr_storage &addr() const { return addr_; }
  socklen_t addrlen() const { return addrlen_; }
  void Close();  // closes the listener and every connection
  bool closed() const { return closed_ && conns_.empty(); }

  int accepted = 0;
  int accept_errors = 0;
  uint64_t bytes = 0;
  int read_errors = 0;

 private:
  struct Conn;
  struct Wr;
  static void OnConnection(ursa_listener *l, int status);
  static void OnRead(ursa_stream *s, ssize_t n, const void *buf);
  static void OnWrite(ursa_write_req *w, int status);
  static void OnShutdown(ursa_stream *s, int status);
  static void OnConnClose(ursa_handle *h);
  static void OnListenerClose(ursa_handle *h);
  void Listen(const sockaddr *sa, socklen_t len, unsigned flags);

  ursa_loop *loop_;
  ursa_listener l_{};
  sockaddr_storage addr_{};
  socklen_t addrlen_ = 0;
  bool closed_ = false;
  bool closing_ = false;
  std::set<Conn *> conns_;
};

// A client that connects, sends payload in writes of chunk bytes, reads the
// echo and closes once every byte is back (or on an error).
class EchoClient {
 public:
  EchoClient(ursa_loop *loop, const sockaddr_storage &addr, socklen_t len,
             std::vector<char> payload, size_t chunk = 0, unsigned flags = 0);
  ~EchoClient();
  bool done() const { return closed_; }
  int connect_status = 1;
  int read_status = 0;
  int write_status = 0;
  std::vector<char> payload;
  std::vector<char> got;

 private:
  static void OnConnect(ursa_stream *s, int status);
  static void OnRead(ursa_stream *s, ssize_t n, const void *buf);
  static void OnWrite(ursa_write_req *w, int status);
  static void OnClose(ursa_handle *h);
  void CloseOnce();
  ursa_stream s_{};
  std::vector<ursa_write_req> writes_;
  size_t chunk_;
  size_t writes_left_ = 0;
  bool closing_ = false;
  bool closed_ = false;
};

// Every client has closed (its echo back, or an error).
bool AllDone(const std::vector<std::unique_ptr<EchoClient>> &clients);

// Expects a and b equal, byte for byte, with lengths and checksums in the
// message when they are not.
::testing::AssertionResult SameBytes(const std::vector<char> &a,
                                     const std::vector<char> &b);

// Blocking helpers for a plain-socket peer.
int BlockingConnect(const sockaddr_storage &ss, socklen_t len);
bool ReadExactly(int fd, void *buf, size_t n);
bool WriteAll(int fd, const void *buf, size_t n);

}  // namespace t

#endif  // URSA_TESTS_TESTUTIL_H

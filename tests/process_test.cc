// process_test.cc - child processes and pipe streams on both backends,
// with and without IORING_OP_WAITID and the multishot read: output
// streamed byte-exact (100 MB through a child and back, with
// back-pressure), exit codes and signals, 100 children at once, a missing
// program named at spawn, no zombie left, the child's descriptors, signal
// mask and dispositions read from /proc/self/status, the application's
// SIGCHLD handler left alone, close before and after the exit; streams
// over pipes, FIFOs, a terminal and devices; descriptor kinds refused.
//
// The child is this test binary again (URSA_PROC_CHILD names what it
// does, before any test runs) or /bin/sh.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/testutil.h"

namespace {

// ---- the child's side ----

uint8_t Pat(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 11 ^ i); }

void WriteAll(int fd, const void *p, size_t n) {
  const char *c = static_cast<const char *>(p);
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(90);
    c += w;
    n -= (size_t)w;
  }
}

// What the child reports: one "key: value" line each.
void Report() {
  std::string out;
  out += "fds:";
  if (DIR *d = opendir("/proc/self/fd")) {
    int self = dirfd(d);
    std::vector<int> fds;
    while (struct dirent *e = readdir(d))
      if (e->d_name[0] != '.' && atoi(e->d_name) != self)
        fds.push_back(atoi(e->d_name));
    closedir(d);
    std::sort(fds.begin(), fds.end());
    for (int f : fds) out += " " + std::to_string(f);
  }
  out += "\n";
  char line[256];
  if (FILE *f = fopen("/proc/self/status", "r")) {
    while (fgets(line, sizeof(line), f))
      if (!strncmp(line, "SigBlk:", 7) || !strncmp(line, "SigIgn:", 7))
        out += line;
    fclose(f);
  }
  char buf[PATH_MAX] = {0};
  out += std::string("cwd: ") + (getcwd(buf, sizeof(buf)) ? buf : "?") + "\n";
  const char *x = getenv("URSA_PROC_X");
  out += std::string("env: ") + (x ? x : "(none)") + "\n";
  out += "sid: " + std::string(getsid(0) == getpid() ? "own" : "parent's") +
         "\n";
  out += "pgid: " +
         std::string(getpgid(0) == getpid() ? "own" : "parent's") + "\n";
  memset(buf, 0, sizeof(buf));
  if (readlink("/proc/self/fd/0", buf, sizeof(buf) - 1) < 0) strcpy(buf, "?");
  out += std::string("fd0: ") + buf + "\n";
  out += "pipe1: " + std::to_string(fcntl(1, F_GETPIPE_SZ)) + "\n";
  WriteAll(1, out.data(), out.size());
}

// Runs before main when the binary is a test's child.
__attribute__((constructor)) void ChildMain() {
  const char *mode = getenv("URSA_PROC_CHILD");
  if (!mode) return;
  if (!strcmp(mode, "report")) {
    Report();
    _exit(0);
  }
  if (!strncmp(mode, "produce ", 8)) { // the pattern's first n bytes
    uint64_t n = strtoull(mode + 8, nullptr, 10), off = 0;
    static char buf[65536];
    while (off < n) {
      size_t k = n - off < sizeof(buf) ? (size_t)(n - off) : sizeof(buf);
      for (size_t i = 0; i < k; i++) buf[i] = (char)Pat(off + i);
      WriteAll(1, buf, k);
      off += k;
    }
    _exit(0);
  }
  if (!strcmp(mode, "cat")) { // stdin to stdout; exits 0 at EOF
    static char buf[65536];
    for (;;) {
      ssize_t r = read(0, buf, sizeof(buf));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) _exit(91);
      if (r == 0) _exit(0);
      WriteAll(1, buf, (size_t)r);
    }
  }
  if (!strcmp(mode, "pause")) {
    for (;;) pause();
  }
  _exit(99);
}

// ---- the parent's side ----

struct Variant {
  const char *name;
  ursa_backend backend;
  uint32_t disable, enable;
};
// Each backend with its defaults (IORING_OP_WAITID, one read at a time),
// and with the other way for each: a poll of the pidfd, multishot reads.
const Variant kVariants[] = {
    {"uring", URSA_BACKEND_URING, 0, 0},
    {"uring_poll", URSA_BACKEND_URING, URSA_FEAT_WAITID,
     URSA_FEAT_READ_MULTISHOT},
    {"epoll", URSA_BACKEND_EPOLL, 0, 0},
    {"epoll_poll", URSA_BACKEND_EPOLL, URSA_FEAT_WAITID,
     URSA_FEAT_READ_MULTISHOT},
};

struct Exit {
  ursa_process p{};
  int calls = 0, code = -1000, sig = -1;
};

void OnExit(ursa_process *p, int code, int sig) {
  auto *e = reinterpret_cast<Exit *>(p);
  e->calls++;
  e->code = code;
  e->sig = sig;
}

// A reading end: counts, hashes (FNV-1a, continued) and sees EOF.
struct Reader {
  ursa_stream s{};
  uint64_t n = 0, h = 1469598103934665603ull;
  int end = 0; // URSA_EOF or an error, once reading stopped
  std::string text; // the bytes, when keep
  bool keep = false;
};

void OnRead(ursa_stream *s, ssize_t n, const void *buf) {
  auto *r = reinterpret_cast<Reader *>(s);
  if (n < 0) {
    r->end = (int)n;
    return;
  }
  const uint8_t *b = static_cast<const uint8_t *>(buf);
  for (ssize_t i = 0; i < n; i++) r->h = (r->h ^ b[i]) * 1099511628211ull;
  r->n += (uint64_t)n;
  if (r->keep) r->text.append(static_cast<const char *>(buf), (size_t)n);
}

uint64_t PatHash(uint64_t n) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < n; i++) h = (h ^ Pat(i)) * 1099511628211ull;
  return h;
}

std::string Self() {
  // argv[0], not /proc/self/exe, which under valgrind is valgrind's.
  char buf[PATH_MAX];
  std::string a = ::testing::internal::GetArgvs()[0];
  return realpath(a.c_str(), buf) ? buf : a;
}

// No child of this process is left, running or a zombie.
bool NoChildren() {
  siginfo_t si{};
  return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 &&
         errno == ECHILD;
}

class Proc : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    o_ = t::OptionsFor(GetParam().backend);
    o_.disable = GetParam().disable;
    o_.enable = GetParam().enable;
    lp_.reset(new t::Loop(&o_));
    ASSERT_EQ(0, lp_->status());
    self_ = Self();
  }
  void TearDown() override {
    if (lp_) lp_->Finish();
    EXPECT_TRUE(NoChildren()) << "a child is left";
  }
  ursa_loop *loop() { return lp_->get(); }
  bool RunUntil(const std::function<bool()> &f, int ms = 30000) {
    return lp_->RunUntil(f, ms);
  }
  // Spawns this binary in mode with stdio; env carries the mode.
  int SpawnSelf(Exit *e, const std::string &mode,
                std::vector<ursa_stdio> stdio, unsigned flags = 0,
                const char *cwd = nullptr, const char *x = nullptr) {
    env_store_ = {"URSA_PROC_CHILD=" + mode};
    if (x) env_store_.push_back(std::string("URSA_PROC_X=") + x);
    env_.clear();
    for (auto &s : env_store_) env_.push_back((char *)s.c_str());
    env_.push_back(nullptr);
    char *argv[] = {(char *)"process_test", nullptr};
    ursa_spawn_options so{};
    so.file = self_.c_str();
    so.argv = argv;
    so.env = env_.data();
    so.cwd = cwd;
    so.stdio = stdio.data();
    so.nstdio = (unsigned)stdio.size();
    so.flags = flags;
    return ursa_spawn(loop(), &e->p, &so, OnExit);
  }
  void Close(ursa_process *p) {
    static int closed;
    closed = 0;
    ASSERT_EQ(0, ursa_process_close(p, [](ursa_handle *) { closed++; }));
    ASSERT_TRUE(RunUntil([&] { return closed == 1; }));
  }
  std::string ReportOf(unsigned flags = 0, const char *cwd = nullptr,
                       const char *x = nullptr, unsigned pipe_size = 0) {
    Reader out;
    out.keep = true;
    Exit e;
    std::vector<ursa_stdio> io(3);
    io[0].kind = URSA_STDIO_IGNORE;
    io[1].kind = URSA_STDIO_PIPE;
    io[1].stream = &out.s;
    io[1].pipe_size = pipe_size;
    int r = SpawnSelf(&e, "report", io, flags, cwd, x);
    EXPECT_EQ(0, r) << ursa_strerror(r) << ": " << ursa_error_detail();
    if (r) return "";
    EXPECT_EQ(0, ursa_read_start(&out.s, OnRead));
    EXPECT_TRUE(RunUntil([&] { return e.calls && out.end; }));
    EXPECT_EQ(URSA_EOF, out.end);
    EXPECT_EQ(0, e.code);
    EXPECT_EQ(0, e.sig);
    EXPECT_TRUE(lp_->CloseStreams({&out.s}));
    Close(&e.p);
    return out.text;
  }

  ursa_loop_options o_{};
  std::unique_ptr<t::Loop> lp_;
  std::string self_;
  std::vector<std::string> env_store_;
  std::vector<char *> env_;
};

// A child's output read through a pipe stream: 3,000,017 bytes, the
// length and checksum exact, then EOF and exit 0; exit codes come back.
TEST_P(Proc, OutputStreamedByteExactAndExitCodes) {
  const uint64_t kN = 3000017;
  Reader out;
  Exit e;
  std::vector<ursa_stdio> io(2);
  io[1].kind = URSA_STDIO_PIPE;
  io[1].stream = &out.s;
  ASSERT_EQ(0, SpawnSelf(&e, "produce " + std::to_string(kN), io))
      << ursa_error_detail();
  EXPECT_GT(e.p.pid, 0);
  ASSERT_EQ(0, ursa_read_start(&out.s, OnRead));
  ASSERT_TRUE(RunUntil([&] { return e.calls && out.end; }));
  EXPECT_EQ(URSA_EOF, out.end);
  EXPECT_EQ(kN, out.n);
  EXPECT_EQ(PatHash(kN), out.h);
  EXPECT_EQ(1, e.calls);
  EXPECT_EQ(0, e.code);
  EXPECT_EQ(0, e.sig);
  EXPECT_EQ(-ESRCH, ursa_process_kill(&e.p, SIGTERM)) << "after its exit";
  ASSERT_TRUE(lp_->CloseStreams({&out.s}));
  Close(&e.p);

  for (int code : {0, 1, 42, 255}) {
    Exit c;
    std::string cmd = "exit " + std::to_string(code);
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)cmd.c_str(), nullptr};
    ursa_spawn_options so{};
    so.file = "sh"; // found in PATH
    so.argv = argv;
    ASSERT_EQ(0, ursa_spawn(loop(), &c.p, &so, OnExit)) << ursa_error_detail();
    ASSERT_TRUE(RunUntil([&] { return c.calls > 0; }));
    EXPECT_EQ(code, c.code);
    EXPECT_EQ(0, c.sig);
    Close(&c.p);
  }
}

struct Feed {
  ursa_write_req w{};
  int status = 1;
};

// 100 MB written into a child that copies stdin to stdout and read back,
// byte-exact both ways; reading pauses for 100 ms at 30 MB, so the child
// blocks on its stdout, stops reading, and the writes wait in turn.
TEST_P(Proc, HundredMegabytesThroughAChildWithBackPressure) {
  const size_t kChunk = 1 << 20, kTotal = 100u << 20, kL = 7340033;
  std::vector<uint8_t> data(kL + kChunk);
  for (size_t i = 0; i < data.size(); i++) data[i] = Pat(i % kL);
  Reader out;
  ursa_stream in{};
  Exit e;
  std::vector<ursa_stdio> io(3);
  io[0].kind = URSA_STDIO_PIPE;
  io[0].stream = &in;
  io[1].kind = URSA_STDIO_PIPE;
  io[1].stream = &out.s;
  ASSERT_EQ(0, SpawnSelf(&e, "cat", io)) << ursa_error_detail();
  ASSERT_EQ(0, ursa_read_start(&out.s, OnRead));

  static std::vector<Feed> feeds;
  feeds.assign(kTotal / kChunk, Feed{});
  static size_t next, done, failed;
  next = done = failed = 0;
  struct Ctx {
    ursa_stream *in;
    const uint8_t *data;
    size_t chunk, l, total;
  };
  static Ctx ctx;
  ctx = {&in, data.data(), kChunk, kL, kTotal};
  // Eight writes in flight; each callback starts the next.
  static void (*feed)() = [] {
    while (next < feeds.size() && next - done < 8) {
      size_t off = next * ctx.chunk;
      Feed &f = feeds[next++];
      int r = ursa_write(&f.w, ctx.in, ctx.data + off % ctx.l, ctx.chunk,
                         0, [](ursa_write_req *w, int st) {
                           reinterpret_cast<Feed *>(w)->status = st;
                           done++;
                           if (st) failed++;
                           feed();
                         });
      if (r) failed++;
    }
  };
  feed();
  bool paused = false, shut_asked = false;
  static int resumed;
  static size_t done_at_resume;
  resumed = 0;
  done_at_resume = 0;
  ursa_timer pause_timer{};
  size_t done_at_pause = 0;
  ASSERT_TRUE(RunUntil([&] {
    if (!paused && out.n >= (30u << 20)) {
      paused = true;
      EXPECT_EQ(0, ursa_read_stop(&out.s));
      done_at_pause = done;
      pause_timer.data = &out.s;
      EXPECT_EQ(0, ursa_timer_start(loop(), &pause_timer, 100, 0,
                                    [](ursa_timer *t, int) {
                                      resumed++;
                                      done_at_resume = done;
                                      ursa_read_start(
                                          static_cast<ursa_stream *>(t->data),
                                          OnRead);
                                    }));
    }
    if (done == feeds.size() && !shut_asked) {
      shut_asked = true; // the child's stdin ends: it exits at EOF
      EXPECT_EQ(0, ursa_shutdown(&in, [](ursa_stream *, int st) {
                  EXPECT_EQ(0, st);
                }));
    }
    return e.calls && out.end;
  }, 120000));
  EXPECT_EQ(1, resumed);
  // The pipes hold a few hundred KiB: the writes stalled during the pause.
  EXPECT_LT(done_at_resume - done_at_pause, feeds.size() - done_at_pause);
  EXPECT_LE(done_at_resume - done_at_pause, 4u)
      << "at most the pipes' 128 KiB and the child's 64 KiB buffer";
  EXPECT_EQ(0u, failed);
  EXPECT_EQ(URSA_EOF, out.end);
  EXPECT_EQ(kTotal, out.n);
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < kTotal; i++) h = (h ^ Pat(i % kL)) * 1099511628211ull;
  EXPECT_EQ(h, out.h);
  EXPECT_EQ(0, e.code);
  ASSERT_TRUE(lp_->CloseStreams({&in, &out.s}));
  Close(&e.p);
}

// A signal ends the child, and the callback says which: the caller has
// SIGTERM blocked (ursa_signal_start), which the child must not inherit.
TEST_P(Proc, KilledBySignalEvenWithTheParentBlockingIt) {
  ursa_signal sig{};
  ASSERT_EQ(0, ursa_signal_start(loop(), &sig, SIGTERM,
                                 [](ursa_signal *, int) {}));
  Exit e;
  ASSERT_EQ(0, SpawnSelf(&e, "pause", {})) << ursa_error_detail();
  // Give it time to reach pause(): a kill before exec is a kill as well.
  ursa_timer tm{};
  static int fired;
  fired = 0;
  ASSERT_EQ(0, ursa_timer_start(loop(), &tm, 50, 0,
                                [](ursa_timer *, int) { fired++; }));
  ASSERT_TRUE(RunUntil([&] { return fired > 0; }));
  EXPECT_EQ(0, e.calls);
  EXPECT_EQ(0, ursa_process_kill(&e.p, 0)) << "alive";
  ASSERT_EQ(0, ursa_process_kill(&e.p, SIGTERM));
  ASSERT_TRUE(RunUntil([&] { return e.calls > 0; }));
  EXPECT_EQ(0, e.code);
  EXPECT_EQ(SIGTERM, e.sig);
  EXPECT_EQ(-ESRCH, ursa_process_kill(&e.p, SIGKILL));
  EXPECT_EQ(-EINVAL, ursa_process_kill(&e.p, 100000));
  Close(&e.p);
  EXPECT_EQ(-EINVAL, ursa_process_kill(&e.p, SIGTERM)) << "closed";
  static int sclosed;
  sclosed = 0;
  ASSERT_EQ(0, ursa_signal_close(&sig, [](ursa_handle *) { sclosed++; }));
  ASSERT_TRUE(RunUntil([&] { return sclosed > 0; }));
}

// 100 children at once, each with its own exit code; all reaped.
TEST_P(Proc, HundredChildrenAtOnce) {
  const int kN = 100;
  std::vector<Exit> e(kN);
  std::vector<std::string> cmd(kN);
  for (int i = 0; i < kN; i++) {
    cmd[i] = "exit " + std::to_string(i + 3);
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)cmd[i].c_str(),
                    nullptr};
    ursa_spawn_options so{};
    so.file = "/bin/sh";
    so.argv = argv;
    ASSERT_EQ(0, ursa_spawn(loop(), &e[i].p, &so, OnExit))
        << i << ": " << ursa_error_detail();
  }
  ASSERT_TRUE(RunUntil([&] {
    for (auto &x : e)
      if (!x.calls) return false;
    return true;
  }, 60000));
  for (int i = 0; i < kN; i++) {
    EXPECT_EQ(1, e[i].calls);
    EXPECT_EQ(i + 3, e[i].code) << i;
    EXPECT_EQ(0, e[i].sig);
  }
  static int closed;
  closed = 0;
  for (auto &x : e)
    ASSERT_EQ(0, ursa_process_close(&x.p, [](ursa_handle *) { closed++; }));
  ASSERT_TRUE(RunUntil([&] { return closed == kN; }));
  EXPECT_TRUE(NoChildren());
}

// A program that is not there is named at the spawn, with nothing
// started or opened; so is a working directory that is not there, and a
// file that cannot be run.
TEST_P(Proc, MissingProgramIsNamedAtSpawn) {
  Exit e;
  ursa_stream out{};
  std::vector<ursa_stdio> io(2);
  io[1].kind = URSA_STDIO_PIPE;
  io[1].stream = &out;
  ursa_spawn_options so{};
  so.file = "/nonexistent/ursa-prog";
  so.stdio = io.data();
  so.nstdio = 2;
  EXPECT_EQ(-ENOENT, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "/nonexistent/ursa-prog"))
      << ursa_error_detail();
  EXPECT_EQ(nullptr, out.handle.kind) << "the stream never opened";
  so.file = "ursa-no-such-program";
  EXPECT_EQ(-ENOENT, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "ursa-no-such-program"));
  so.file = "/bin/sh";
  so.cwd = "/nonexistent/dir";
  EXPECT_EQ(-ENOENT, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "/nonexistent/dir"));
  t::TempDir dir("ursa-proc");
  std::string f = dir.path() + "/not-executable";
  int fd = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  close(fd);
  so.file = f.c_str();
  so.cwd = nullptr;
  int r = ursa_spawn(loop(), &e.p, &so, OnExit);
  // root may pass the permission check; the kernel then finds no format.
  EXPECT_TRUE(r == -EACCES || r == -ENOEXEC) << ursa_strerror(r);
  EXPECT_EQ(0, e.calls);
  EXPECT_EQ(0, ursa_loop_alive(loop()));
}

// Only the descriptors named reach the child (not an inheritable one of
// the caller's), with its signals unblocked and at their defaults though
// the caller blocks SIGTERM and ignores SIGPIPE; slot 0 is /dev/null.
TEST_P(Proc, ChildGetsOnlyItsDescriptorsAndCleanSignals) {
  int leak = open("/dev/null", O_RDONLY); // no O_CLOEXEC
  ASSERT_GE(leak, 3);
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(0, sigaction(SIGPIPE, &ign, &old));
  ursa_signal sig{};
  ASSERT_EQ(0, ursa_signal_start(loop(), &sig, SIGTERM,
                                 [](ursa_signal *, int) {}));
  std::string rep = ReportOf();
  EXPECT_NE(std::string::npos, rep.find("fds: 0 1 2\n")) << rep;
  EXPECT_NE(std::string::npos, rep.find("SigBlk:\t0000000000000000\n"))
      << rep;
  EXPECT_NE(std::string::npos, rep.find("SigIgn:\t0000000000000000\n"))
      << rep;
  EXPECT_NE(std::string::npos, rep.find("fd0: /dev/null\n")) << rep;
  EXPECT_NE(std::string::npos, rep.find("sid: parent's\n")) << rep;
  close(leak);
  sigaction(SIGPIPE, &old, nullptr);
  static int sclosed;
  sclosed = 0;
  ASSERT_EQ(0, ursa_signal_close(&sig, [](ursa_handle *) { sclosed++; }));
  ASSERT_TRUE(RunUntil([&] { return sclosed > 0; }));
}

// A slot inherited from a descriptor the caller has closed stays closed
// in the child, though the pipe ursa makes for another slot takes that
// very number in the caller.
TEST_P(Proc, InheritOfAClosedDescriptorStaysClosed) {
  int low = dup(0); // the lowest free number: the pipe will take it
  ASSERT_GE(low, 3);
  ASSERT_LT(low, URSA_SPAWN_MAX_STDIO);
  close(low);
  Reader out;
  out.keep = true;
  Exit e;
  std::vector<ursa_stdio> io((size_t)low + 1); // slots 2..low inherited
  io[0].kind = URSA_STDIO_IGNORE;
  io[1].kind = URSA_STDIO_PIPE;
  io[1].stream = &out.s;
  ASSERT_EQ(0, SpawnSelf(&e, "report", io)) << ursa_error_detail();
  ASSERT_EQ(0, ursa_read_start(&out.s, OnRead));
  ASSERT_TRUE(RunUntil([&] { return e.calls && out.end; }));
  std::string fds = out.text.substr(0, out.text.find('\n')) + " ";
  EXPECT_EQ(std::string::npos, fds.find(" " + std::to_string(low) + " "))
      << "descriptor " << low << " reached the child: " << fds;
  EXPECT_NE(std::string::npos, fds.find(" 1 ")) << fds;
  ASSERT_TRUE(lp_->CloseStreams({&out.s}));
  Close(&e.p);
}

// Working directory, environment, a new session, a new process group.
TEST_P(Proc, CwdEnvironmentSessionAndGroup) {
  t::TempDir dir("ursa-proc");
  char real[PATH_MAX];
  ASSERT_NE(nullptr, realpath(dir.path().c_str(), real));
  std::string rep = ReportOf(URSA_SPAWN_SETSID, dir.path().c_str(), "hello");
  EXPECT_NE(std::string::npos, rep.find(std::string("cwd: ") + real + "\n"))
      << rep;
  EXPECT_NE(std::string::npos, rep.find("env: hello\n")) << rep;
  EXPECT_NE(std::string::npos, rep.find("sid: own\n")) << rep;
  rep = ReportOf(URSA_SPAWN_SETPGID);
  EXPECT_NE(std::string::npos, rep.find("sid: parent's\n")) << rep;
  EXPECT_NE(std::string::npos, rep.find("pgid: own\n")) << rep;
  EXPECT_NE(std::string::npos, rep.find("env: (none)\n")) << rep;
}

// The application's SIGCHLD handler stays installed and still runs; ursa
// reaps its own child through the pidfd regardless.
TEST_P(Proc, ApplicationSigchldHandlerLeftAlone) {
  static volatile sig_atomic_t got;
  got = 0;
  struct sigaction sa {}, old {}, now {};
  sa.sa_handler = [](int) { got = got + 1; };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(0, sigaction(SIGCHLD, &sa, &old));
  Exit e;
  char *argv[] = {(char *)"sh", (char *)"-c", (char *)"exit 9", nullptr};
  ursa_spawn_options so{};
  so.file = "/bin/sh";
  so.argv = argv;
  ASSERT_EQ(0, ursa_spawn(loop(), &e.p, &so, OnExit));
  ASSERT_TRUE(RunUntil([&] { return e.calls > 0 && got > 0; }));
  EXPECT_EQ(9, e.code);
  ASSERT_EQ(0, sigaction(SIGCHLD, nullptr, &now));
  EXPECT_EQ((void *)sa.sa_handler, (void *)now.sa_handler);
  Close(&e.p);
  sigaction(SIGCHLD, &old, nullptr);
}

// A handle closed before the exit: no callback, and the child is reaped
// once it has ended, at the next spawn (here) or at the loop's close.
TEST_P(Proc, CloseBeforeExitLeavesNoZombie) {
  Exit a;
  ASSERT_EQ(0, SpawnSelf(&a, "pause", {}));
  pid_t pid = a.p.pid;
  Close(&a.p);
  EXPECT_EQ(0, a.calls);
  // Still ours, unreaped: its number cannot have been reused.
  ASSERT_EQ(0, kill(pid, SIGKILL));
  siginfo_t si{};
  ASSERT_EQ(0, waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT));
  Exit b;
  char *argv[] = {(char *)"true", nullptr};
  ursa_spawn_options so{};
  so.file = "true";
  so.argv = argv;
  ASSERT_EQ(0, ursa_spawn(loop(), &b.p, &so, OnExit));
  errno = 0;
  EXPECT_EQ(-1, waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG));
  EXPECT_EQ(ECHILD, errno) << "the closed child was reaped at the spawn";
  ASSERT_TRUE(RunUntil([&] { return b.calls > 0; }));
  EXPECT_EQ(0, b.code);
  Close(&b.p);

  // Closed, then ended: the loop's close reaps it (TearDown checks).
  Exit c;
  ASSERT_EQ(0, SpawnSelf(&c, "pause", {}));
  pid = c.p.pid;
  Close(&c.p);
  ASSERT_EQ(0, kill(pid, SIGKILL));
  ASSERT_EQ(0, waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT));
}

// A descriptor of the caller's as the child's stdout and stderr (the
// caller's stays open); a pipe the child reads at 3.
TEST_P(Proc, CallersDescriptorAndAPipeAtThree) {
  int p[2];
  ASSERT_EQ(0, pipe2(p, O_CLOEXEC));
  Reader out;
  ASSERT_EQ(0, ursa_stream_open(loop(), &out.s, p[0]));
  std::vector<ursa_stdio> io(2);
  io[1].kind = URSA_STDIO_FD;
  io[1].fd = p[1];
  Exit e;
  ASSERT_EQ(0, SpawnSelf(&e, "produce 100000", io)) << ursa_error_detail();
  EXPECT_GE(fcntl(p[1], F_GETFD), 0) << "still the caller's";
  close(p[1]);
  ASSERT_EQ(0, ursa_read_start(&out.s, OnRead));
  ASSERT_TRUE(RunUntil([&] { return e.calls && out.end; }));
  EXPECT_EQ(100000u, out.n);
  EXPECT_EQ(PatHash(100000), out.h);
  ASSERT_TRUE(lp_->CloseStreams({&out.s}));
  Close(&e.p);

  // sh reads "exit 5" from descriptor 3, a pipe ursa made.
  ursa_stream cmd{};
  std::vector<ursa_stdio> io3(4);
  io3[3].kind = URSA_STDIO_PIPE_IN;
  io3[3].stream = &cmd;
  char *argv[] = {(char *)"sh", (char *)"-c", (char *)"read x <&3; exit $x",
                  nullptr};
  ursa_spawn_options so{};
  so.file = "/bin/sh";
  so.argv = argv;
  so.stdio = io3.data();
  so.nstdio = 4;
  Exit f;
  ASSERT_EQ(0, ursa_spawn(loop(), &f.p, &so, OnExit)) << ursa_error_detail();
  Feed w;
  ASSERT_EQ(0, ursa_write(&w.w, &cmd, "5\n", 2, 0,
                          [](ursa_write_req *q, int st) {
                            reinterpret_cast<Feed *>(q)->status = st;
                          }));
  ASSERT_TRUE(RunUntil([&] { return f.calls > 0; }));
  EXPECT_EQ(0, w.status);
  EXPECT_EQ(5, f.code);
  ASSERT_TRUE(lp_->CloseStreams({&cmd}));
  Close(&f.p);
}

TEST_P(Proc, BadOptionsAreNamed) {
  Exit e;
  ursa_spawn_options so{};
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "no program"));
  so.file = "/bin/true";
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, nullptr));
  EXPECT_EQ(-EINVAL, ursa_spawn(nullptr, &e.p, &so, OnExit));
  std::vector<ursa_stdio> io(65);
  so.stdio = io.data();
  so.nstdio = 65;
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, OnExit));
  so.nstdio = 2;
  io[1].kind = (ursa_stdio_kind)77;
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "stdio[1]"));
  io[1].kind = URSA_STDIO_PIPE;
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "stream"));
  io[1].kind = URSA_STDIO_FD;
  io[1].fd = 1000;
  EXPECT_EQ(-EBADF, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "fd 1000"));
  so.nstdio = 0;
  so.flags = URSA_SPAWN_SETSID | URSA_SPAWN_SETPGID;
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, OnExit));
  so.flags = 0x100;
  EXPECT_EQ(-EINVAL, ursa_spawn(loop(), &e.p, &so, OnExit));
  EXPECT_EQ(-EINVAL, ursa_process_kill(nullptr, 0));
  EXPECT_EQ(-EINVAL, ursa_process_kill(&e.p, 0)) << "never opened";
  EXPECT_EQ(0, ursa_loop_alive(loop()));
}

// Pipe streams read one buffer at a time unless the multishot read is
// asked for (opt-in), on either backend.
TEST_P(Proc, MultishotReadOnlyWhenAsked) {
  ursa_features f;
  ursa_loop_features(loop(), &f);
  EXPECT_EQ(GetParam().enable & URSA_FEAT_READ_MULTISHOT,
            f.used & URSA_FEAT_READ_MULTISHOT)
      << std::hex << f.used;
}

// A new pipe is URSA_SPAWN_PIPE_SIZE unless asked otherwise (the kernel
// rounds up to a power of two pages); a size on a slot that is no new
// pipe, or above 1 GiB, is refused by name; one the kernel refuses (an
// unprivileged caller above /proc/sys/fs/pipe-max-size) fails the spawn
// with EPERM, naming the slot, and leaves no descriptor behind.
TEST_P(Proc, PipeSizeByDefaultAsAskedAndRefused) {
  auto pipe1 = [](const std::string &rep) {
    size_t at = rep.find("pipe1: ");
    return at == std::string::npos ? -1 : atoi(rep.c_str() + at + 7);
  };
  EXPECT_EQ((int)URSA_SPAWN_PIPE_SIZE, pipe1(ReportOf()));
  EXPECT_EQ(65536, pipe1(ReportOf(0, nullptr, nullptr, 65536)));
  EXPECT_EQ(131072, pipe1(ReportOf(0, nullptr, nullptr, 100000)));
  Exit e;
  ursa_stream s{};
  std::vector<ursa_stdio> io(2);
  io[1].kind = URSA_STDIO_IGNORE;
  io[1].pipe_size = 65536;
  EXPECT_EQ(-EINVAL, SpawnSelf(&e, "report", io));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "stdio[1]: pipe_size 65536, "
                                                 "but the slot is not a new "
                                                 "pipe"))
      << ursa_error_detail();
  io[1].kind = URSA_STDIO_PIPE;
  io[1].stream = &s;
  io[1].pipe_size = 2u << 30;
  EXPECT_EQ(-EINVAL, SpawnSelf(&e, "report", io));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "over 1 GiB"))
      << ursa_error_detail();
  // The kernel's refusal, in a child that gave up root (root may pass
  // pipe-max-size): a loop of its own there, and its descriptors counted.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // (In a user namespace, as bazel's sandbox, root is no root for the
    // pipe's limit, and setuid may fail: either way the limit holds.)
    if (getuid() == 0 && setuid(65534) < 0) {
    }
    ursa_loop *l = nullptr;
    ursa_loop_options lo = o_;
    if (ursa_loop_new(&l, &lo) < 0) _exit(11);
    int before = 0, after = 0;
    for (int fd = 0; fd < 1024; fd++) before += fcntl(fd, F_GETFD) >= 0;
    ursa_process p{};
    ursa_stream ps{};
    ursa_stdio cio[2] = {};
    cio[1].kind = URSA_STDIO_PIPE;
    cio[1].stream = &ps;
    cio[1].pipe_size = 64u << 20; /* above the default 1 MiB maximum */
    ursa_spawn_options so{};
    so.file = "/bin/true";
    so.stdio = cio;
    so.nstdio = 2;
    int r = ursa_spawn(l, &p, &so, OnExit);
    for (int fd = 0; fd < 1024; fd++) after += fcntl(fd, F_GETFD) >= 0;
    bool named = strstr(ursa_error_detail(), "stdio[1]: the kernel refused "
                                             "pipe_size 67108864") != nullptr;
    if (r == 0) _exit(20); /* privileged after all: no limit to meet */
    if (ursa_loop_close(l) < 0) _exit(12);
    _exit(r != -EPERM ? 13 : !named ? 14 : before != after ? 15 : 0);
  }
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  ASSERT_TRUE(WIFEXITED(st)) << st;
  if (WEXITSTATUS(st) == 20)
    GTEST_SKIP() << "privileged (CAP_SYS_RESOURCE): the kernel takes any "
                    "pipe size";
  EXPECT_EQ(0, WEXITSTATUS(st)) << "11: no loop, 12: no close, 13: not "
                                   "EPERM, 14: not named, 15: a descriptor "
                                   "left";
}

// ---- streams over pipes, FIFOs and devices, without a child ----

struct Wr {
  ursa_write_req w{};
  int status = 1;
};
void OnWr(ursa_write_req *w, int st) { reinterpret_cast<Wr *>(w)->status = st; }

// 4 MiB through a pipe in 64 KiB writes, byte-exact; the writer's
// shutdown closes its end and the reader sees EOF after every byte; a
// reading stream refuses shutdown.
TEST_P(Proc, PipeStreamByteExactThenShutdownIsEof) {
  int p[2];
  ASSERT_EQ(0, pipe2(p, O_CLOEXEC));
  Reader rd;
  ursa_stream w{};
  ASSERT_EQ(0, ursa_stream_open(loop(), &rd.s, p[0]));
  ASSERT_EQ(0, ursa_stream_open(loop(), &w, p[1]));
  const size_t kN = 4 << 20, kW = 65536;
  std::vector<char> data(kN);
  for (size_t i = 0; i < kN; i++) data[i] = (char)Pat(i);
  std::vector<Wr> reqs(kN / kW);
  for (size_t i = 0; i < reqs.size(); i++)
    ASSERT_EQ(0, ursa_write(&reqs[i].w, &w, &data[i * kW], kW, 0, OnWr));
  ASSERT_EQ(0, ursa_read_start(&rd.s, OnRead));
  EXPECT_EQ(-EINVAL, ursa_shutdown(&rd.s, [](ursa_stream *, int) {}))
      << "reading";
  static int shut;
  shut = 1;
  ASSERT_EQ(0, ursa_shutdown(&w, [](ursa_stream *, int st) { shut = st; }));
  ASSERT_TRUE(RunUntil([&] { return rd.end != 0 && shut == 0; }));
  for (auto &r : reqs) EXPECT_EQ(0, r.status);
  EXPECT_EQ(URSA_EOF, rd.end);
  EXPECT_EQ(kN, rd.n);
  EXPECT_EQ(PatHash(kN), rd.h);
  Wr late;
  EXPECT_EQ(-EPIPE, ursa_write(&late.w, &w, "x", 1, 0, OnWr));
  ASSERT_TRUE(lp_->CloseStreams({&rd.s, &w}));
}

// A write to a pipe whose reader has gone fails with -EPIPE (SIGPIPE
// ignored here, as the header asks of such a program).
TEST_P(Proc, WriteToAClosedPipeIsEpipe) {
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(0, sigaction(SIGPIPE, &ign, &old));
  int p[2];
  ASSERT_EQ(0, pipe2(p, O_CLOEXEC));
  close(p[0]);
  ursa_stream w{};
  ASSERT_EQ(0, ursa_stream_open(loop(), &w, p[1]));
  Wr q;
  ASSERT_EQ(0, ursa_write(&q.w, &w, "abc", 3, 0, OnWr));
  ASSERT_TRUE(RunUntil([&] { return q.status != 1; }));
  EXPECT_EQ(-EPIPE, q.status);
  ASSERT_TRUE(lp_->CloseStreams({&w}));
  sigaction(SIGPIPE, &old, nullptr);
}

// A FIFO and a character device are streams too; /dev/zero has no poll,
// so io_uring's multishot read falls back to one read at a time.
TEST_P(Proc, FifoAndDeviceStreams) {
  t::TempDir dir("ursa-proc");
  std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(0, mkfifo(fifo.c_str(), 0600));
  int r = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(r, 0);
  int w = open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(w, 0);
  Reader rd;
  ursa_stream ws{};
  ASSERT_EQ(0, ursa_stream_open(loop(), &rd.s, r));
  ASSERT_EQ(0, ursa_stream_open(loop(), &ws, w));
  std::vector<char> data(1 << 20);
  for (size_t i = 0; i < data.size(); i++) data[i] = (char)Pat(i);
  Wr q;
  ASSERT_EQ(0, ursa_write(&q.w, &ws, data.data(), data.size(), 0, OnWr));
  ASSERT_EQ(0, ursa_read_start(&rd.s, OnRead));
  ASSERT_TRUE(RunUntil([&] { return rd.n >= data.size() && q.status != 1; }));
  EXPECT_EQ(0, q.status);
  EXPECT_EQ(data.size(), rd.n);
  EXPECT_EQ(PatHash(data.size()), rd.h);
  ASSERT_TRUE(lp_->CloseStreams({&rd.s, &ws}));

  Reader z;
  z.keep = true;
  int zfd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(zfd, 0);
  ASSERT_EQ(0, ursa_stream_open(loop(), &z.s, zfd));
  ASSERT_EQ(0, ursa_read_start(&z.s, [](ursa_stream *s, ssize_t n,
                                        const void *b) {
    OnRead(s, n, b);
    if (reinterpret_cast<Reader *>(s)->n >= (1 << 20)) ursa_read_stop(s);
  }));
  ASSERT_TRUE(RunUntil([&] { return z.n >= (1 << 20); }));
  EXPECT_EQ(std::string::npos, z.text.find_first_not_of('\0'));
  ASSERT_TRUE(lp_->CloseStreams({&z.s}));
}

// A terminal: the master side of a pseudo-terminal as a stream, the
// slave in raw mode (no echo, no line editing); 64 KiB each way, exact.
TEST_P(Proc, TerminalStream) {
  int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) GTEST_SKIP() << "no pseudo-terminals here: " << strerror(errno);
  ASSERT_EQ(0, grantpt(m));
  ASSERT_EQ(0, unlockpt(m));
  int sl = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(sl, 0);
  struct termios tio;
  ASSERT_EQ(0, tcgetattr(sl, &tio));
  cfmakeraw(&tio);
  ASSERT_EQ(0, tcsetattr(sl, TCSANOW, &tio));
  Reader rd;
  ASSERT_EQ(0, ursa_stream_open(loop(), &rd.s, m));
  ASSERT_EQ(0, ursa_read_start(&rd.s, OnRead));
  const size_t kN = 65536;
  std::vector<char> data(kN);
  for (size_t i = 0; i < kN; i++) data[i] = (char)Pat(i);
  // The slave side is written a piece at a time between loop rounds,
  // without blocking (the terminal holds only a few KiB).
  int fl = fcntl(sl, F_GETFL);
  ASSERT_EQ(0, fcntl(sl, F_SETFL, fl | O_NONBLOCK));
  size_t put = 0;
  ASSERT_TRUE(RunUntil([&] {
    if (put < kN) {
      ssize_t w = write(sl, &data[put], std::min<size_t>(1024, kN - put));
      if (w > 0) put += (size_t)w;
    }
    return rd.n >= kN;
  }, 10000)) << put << " written, " << rd.n << " read";
  EXPECT_EQ(kN, rd.n);
  EXPECT_EQ(PatHash(kN), rd.h);
  // And back: the stream writes, the slave reads.
  Wr q;
  ASSERT_EQ(0, ursa_write(&q.w, &rd.s, data.data(), kN, 0, OnWr));
  std::vector<char> back;
  // A tick, so that the rounds (and the reads of the slave between them)
  // go on while the write waits for room.
  ursa_timer tick{};
  ASSERT_EQ(0, ursa_timer_start(loop(), &tick, 1, 1,
                                [](ursa_timer *, int) {}));
  ASSERT_TRUE(RunUntil([&] {
    char buf[4096];
    ssize_t r = read(sl, buf, sizeof(buf));
    if (r > 0) back.insert(back.end(), buf, buf + r);
    return back.size() >= kN && q.status != 1;
  }));
  ursa_timer_stop(&tick);
  EXPECT_EQ(0, q.status);
  ASSERT_EQ(kN, back.size());
  EXPECT_EQ(0, memcmp(back.data(), data.data(), kN));
  ASSERT_EQ(0, ursa_read_stop(&rd.s));
  ASSERT_TRUE(lp_->CloseStreams({&rd.s}));
  close(sl);
}

// ursa_write_file() onto a pipe stream: 3 MiB + 5 from a file, exact.
TEST_P(Proc, FileWrittenIntoAPipeStream) {
  t::TempDir dir("ursa-proc");
  std::string f = dir.path() + "/data";
  const size_t kN = (3 << 20) + 5;
  std::vector<char> data(kN);
  for (size_t i = 0; i < kN; i++) data[i] = (char)Pat(i);
  int fd = open(f.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ((ssize_t)kN, write(fd, data.data(), kN));
  int p[2];
  ASSERT_EQ(0, pipe2(p, O_CLOEXEC));
  Reader rd;
  ursa_stream w{};
  ASSERT_EQ(0, ursa_stream_open(loop(), &rd.s, p[0]));
  ASSERT_EQ(0, ursa_stream_open(loop(), &w, p[1]));
  Wr q;
  ASSERT_EQ(0, ursa_write_file(&q.w, &w, fd, 0, kN, OnWr));
  ASSERT_EQ(0, ursa_read_start(&rd.s, OnRead));
  ASSERT_TRUE(RunUntil([&] { return rd.n >= kN && q.status != 1; }));
  EXPECT_EQ(0, q.status);
  EXPECT_EQ(kN, rd.n);
  EXPECT_EQ(PatHash(kN), rd.h);
  ASSERT_TRUE(lp_->CloseStreams({&rd.s, &w}));
  close(fd);
}

// What a stream cannot be is refused, named, and nothing opened.
TEST_P(Proc, DescriptorKindsAStreamRefuses) {
  t::TempDir dir("ursa-proc");
  std::string f = dir.path() + "/file";
  int fd = open(f.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ursa_stream s{};
  EXPECT_EQ(-EINVAL, ursa_stream_open(loop(), &s, fd));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "regular file"))
      << ursa_error_detail();
  close(fd);
  int d = open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_EQ(-EINVAL, ursa_stream_open(loop(), &s, d));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "directory"));
  close(d);
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(-EINVAL, ursa_stream_open(loop(), &s, u));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "datagram"));
  close(u);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(AF_INET, &ss);
  ASSERT_EQ(0, bind(l, (sockaddr *)&ss, len));
  ASSERT_EQ(0, listen(l, 1));
  EXPECT_EQ(-EINVAL, ursa_stream_open(loop(), &s, l));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "listening"));
  close(l);
  EXPECT_EQ(-EBADF, ursa_stream_open(loop(), &s, 1000));
  EXPECT_EQ(nullptr, s.handle.kind);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, Proc, ::testing::ValuesIn(kVariants),
    [](const ::testing::TestParamInfo<Variant> &i) { return i.param.name; });

}  // namespace

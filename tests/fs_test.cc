// fs_test.cc - file requests on both backends: open, read and write at
// offsets (above 4 GiB too), vectors, fsync, statx, close, unlink, rename
// and mkdir, byte-exact with lengths and checksums; short reads; the
// errors named (ENOENT, EACCES, EISDIR, EBADF, openat2's resolve rules);
// cancel in each state; a read that waits never stalls the loop; bad
// arguments refused.
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "tests/testutil.h"

namespace {

struct Req {
  ursa_fs_req r{};
  int res = 1;
  int calls = 0;
};

void Done(ursa_fs_req *r, int res) {
  auto *q = reinterpret_cast<Req *>(r);
  q->res = res;
  q->calls++;
}

class Fs : public ::testing::TestWithParam<ursa_backend> {
 protected:
  void SetUp() override {
    ASSERT_EQ(0, ursa_work_pool_size(4));
    o_ = t::OptionsFor(GetParam());
    lp_.reset(new t::Loop(&o_));
    ASSERT_EQ(0, lp_->status());
    dir_.reset(new t::TempDir("ursa-fs"));
  }
  void TearDown() override {
    if (lp_) lp_->Finish();
  }
  ursa_loop *loop() { return lp_->get(); }
  std::string P(const char *name) { return dir_->path() + "/" + name; }
  // Runs until q's callback; its result.
  int Wait(Req &q) {
    EXPECT_TRUE(lp_->RunUntil([&] { return q.calls > 0; }));
    EXPECT_EQ(1, q.calls);
    return q.res;
  }
  int Open(const std::string &path, int flags, unsigned mode = 0,
           uint64_t resolve = 0, int dirfd = AT_FDCWD) {
    Req q;
    int r = ursa_fs_open(loop(), &q.r, dirfd, path.c_str(), flags, mode,
                         resolve, Done);
    if (r) return r;
    return Wait(q);
  }
  int Read(int fd, void *buf, size_t len, int64_t off) {
    Req q;
    EXPECT_EQ(0, ursa_fs_read(loop(), &q.r, fd, buf, len, off, Done));
    return Wait(q);
  }
  int Write(int fd, const void *buf, size_t len, int64_t off) {
    Req q;
    EXPECT_EQ(0, ursa_fs_write(loop(), &q.r, fd, buf, len, off, Done));
    return Wait(q);
  }
  int Close(int fd) {
    Req q;
    EXPECT_EQ(0, ursa_fs_close(loop(), &q.r, fd, Done));
    return Wait(q);
  }
  int Statx(const std::string &path, struct statx *st, int dirfd = AT_FDCWD,
            int flags = 0) {
    Req q;
    EXPECT_EQ(0, ursa_fs_statx(loop(), &q.r, dirfd, path.c_str(), flags,
                               STATX_BASIC_STATS, st, Done));
    return Wait(q);
  }

  ursa_loop_options o_{};
  std::unique_ptr<t::Loop> lp_;
  std::unique_ptr<t::TempDir> dir_;
};

// 4 MiB written in 64 KiB requests, all in flight at once, at their own
// offsets; read back in 48 KiB requests (the last one short), byte-exact.
TEST_P(Fs, WritesAndReadsAtOffsetsByteExact) {
  const size_t kSize = 4 << 20, kW = 65536, kR = 49152;
  std::vector<char> data = t::RandomBytes(kSize, 7);
  int fd = Open(P("data"), O_CREAT | O_RDWR | O_EXCL, 0600);
  ASSERT_GE(fd, 0) << ursa_strerror(fd);
  std::vector<Req> w(kSize / kW);
  for (size_t i = 0; i < w.size(); i++)
    ASSERT_EQ(0, ursa_fs_write(loop(), &w[i].r, fd, &data[i * kW], kW,
                               (int64_t)(i * kW), Done));
  ASSERT_TRUE(lp_->RunUntil([&] {
    for (auto &q : w)
      if (!q.calls) return false;
    return true;
  }));
  for (size_t i = 0; i < w.size(); i++) EXPECT_EQ((int)kW, w[i].res) << i;
  Req sync;
  ASSERT_EQ(0, ursa_fs_fsync(loop(), &sync.r, fd, 0, Done));
  EXPECT_EQ(0, Wait(sync));
  Req dsync;
  ASSERT_EQ(0, ursa_fs_fsync(loop(), &dsync.r, fd, 1, Done));
  EXPECT_EQ(0, Wait(dsync));
  struct statx st {};
  ASSERT_EQ(0, Statx("", &st, fd, AT_EMPTY_PATH));
  EXPECT_EQ(kSize, st.stx_size);
  EXPECT_TRUE(S_ISREG(st.stx_mode));
  EXPECT_EQ(0600u, st.stx_mode & 07777u);

  // Each asks 4 KiB more than is left before the next one's offset, into
  // a buffer of its own: the last read ends at the end of the file, short.
  size_t n = (kSize + kR - 1) / kR;
  std::vector<Req> r(n);
  std::vector<std::vector<char>> bufs(n, std::vector<char>(kR + 4096));
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(0, ursa_fs_read(loop(), &r[i].r, fd, bufs[i].data(),
                              bufs[i].size(), (int64_t)(i * kR), Done));
  ASSERT_TRUE(lp_->RunUntil([&] {
    for (auto &q : r)
      if (!q.calls) return false;
    return true;
  }));
  std::vector<char> got;
  for (size_t i = 0; i < n; i++) {
    size_t want = std::min(kR + 4096, kSize - i * kR);
    EXPECT_EQ((int)want, r[i].res) << i;
    if (r[i].res > 0)
      got.insert(got.end(), bufs[i].begin(),
                 bufs[i].begin() + std::min((size_t)r[i].res, kR));
  }
  EXPECT_TRUE(t::SameBytes(data, got));
  EXPECT_EQ(0, Read(fd, got.data(), 100, kSize)) << "at the end: 0";
  EXPECT_EQ(0, Close(fd));
  EXPECT_EQ(-EBADF, Read(fd, got.data(), 100, 0)) << "closed";
}

// Registered buffers: 2 MiB written from and read back into two
// registered 1 MiB buffers in 64 KiB pieces at their own offsets (on
// io_uring as READ_FIXED/WRITE_FIXED, on epoll as the plain calls),
// byte-exact; one piece read at once, one through the ring (the file's
// pages dropped first); a range outside its buffer, an index past the set,
// no set and a second set refused and named; unregistering refused while
// a fixed request is out, then allowed, then -ENOENT.
TEST_P(Fs, RegisteredBuffersByteExact) {
  const size_t kBuf = 1 << 20, kPiece = 65536;
  std::vector<char> data = t::RandomBytes(2 * kBuf, 11);
  std::vector<char> out(2 * kBuf), in(2 * kBuf, 0);
  memcpy(out.data(), data.data(), data.size());
  struct iovec iov[3] = {{out.data(), kBuf},
                         {out.data() + kBuf, kBuf},
                         {in.data(), 2 * kBuf}};
  Req none;
  EXPECT_EQ(-EINVAL, ursa_fs_read_fixed(loop(), &none.r, 0, 0, in.data(), 1,
                                        0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "no buffers registered"))
      << ursa_error_detail();
  EXPECT_EQ(-ENOENT, ursa_fs_buffers_unregister(loop()));
  ASSERT_EQ(0, ursa_fs_buffers_register(loop(), iov, 3))
      << ursa_error_detail();
  EXPECT_EQ(-EBUSY, ursa_fs_buffers_register(loop(), iov, 3));
  int fd = Open(P("fixed"), O_CREAT | O_RDWR | O_EXCL, 0600);
  ASSERT_GE(fd, 0) << ursa_strerror(fd);
  std::vector<Req> w(2 * kBuf / kPiece);
  for (size_t i = 0; i < w.size(); i++)
    ASSERT_EQ(0, ursa_fs_write_fixed(loop(), &w[i].r, fd,
                                     (unsigned)(i * kPiece / kBuf),
                                     &out[i * kPiece], kPiece,
                                     (int64_t)(i * kPiece), Done))
        << i << ": " << ursa_error_detail();
  EXPECT_EQ(-EBUSY, ursa_fs_buffers_unregister(loop())) << "writes out";
  ASSERT_TRUE(lp_->RunUntil([&] {
    for (auto &q : w)
      if (!q.calls) return false;
    return true;
  }));
  for (size_t i = 0; i < w.size(); i++) EXPECT_EQ((int)kPiece, w[i].res) << i;
  // Half read while cached, half after the pages are dropped, so that
  // both the read at once and the ring's (or the pool's) read run.
  std::vector<Req> r(2 * kBuf / kPiece);
  for (size_t i = 0; i < r.size(); i++) {
    if (i == r.size() / 2) {
      ASSERT_TRUE(lp_->RunUntil([&] { return r[i - 1].calls > 0; }));
      fdatasync(fd);
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    ASSERT_EQ(0, ursa_fs_read_fixed(loop(), &r[i].r, fd, 2, &in[i * kPiece],
                                    kPiece, (int64_t)(i * kPiece), Done))
        << i << ": " << ursa_error_detail();
  }
  ASSERT_TRUE(lp_->RunUntil([&] {
    for (auto &q : r)
      if (!q.calls) return false;
    return true;
  }));
  for (size_t i = 0; i < r.size(); i++) EXPECT_EQ((int)kPiece, r[i].res) << i;
  EXPECT_TRUE(t::SameBytes(data, in));
  EXPECT_EQ(t::Checksum(data.data(), data.size()),
            t::Checksum(in.data(), in.size()));
  Req bad;
  EXPECT_EQ(-EINVAL, ursa_fs_read_fixed(loop(), &bad.r, fd, 0,
                                        out.data() + kBuf - 10, 20, 0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "not inside buffer 0"))
      << ursa_error_detail();
  EXPECT_EQ(-EINVAL, ursa_fs_read_fixed(loop(), &bad.r, fd, 3, in.data(), 1,
                                        0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "buffer 3 of 3"))
      << ursa_error_detail();
  EXPECT_EQ(0, Close(fd));
  EXPECT_EQ(0, ursa_fs_buffers_unregister(loop()));
  EXPECT_EQ(-ENOENT, ursa_fs_buffers_unregister(loop()));
  struct iovec empty = {in.data(), 0};
  EXPECT_EQ(-EINVAL, ursa_fs_buffers_register(loop(), &empty, 1));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "buffer 0 is empty"))
      << ursa_error_detail();
  EXPECT_EQ(-EINVAL, ursa_fs_buffers_register(loop(), iov, 0));
  // A set left registered goes with the loop (TearDown closes it).
  ASSERT_EQ(0, ursa_fs_buffers_register(loop(), iov, 1));
}

// A sparse file with data above 4 GiB: the offset is 64 bits all the way.
TEST_P(Fs, OffsetsAbove4GiB) {
  int fd = Open(P("sparse"), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0) << ursa_strerror(fd);
  const int64_t off = (5ll << 30) + 12345;
  std::vector<char> data = t::RandomBytes(10000, 3);
  ASSERT_EQ(10000, Write(fd, data.data(), data.size(), off));
  struct statx st {};
  ASSERT_EQ(0, Statx("", &st, fd, AT_EMPTY_PATH));
  EXPECT_EQ((uint64_t)off + 10000, st.stx_size);
  std::vector<char> got(20000, 'x');
  ASSERT_EQ(10000, Read(fd, got.data(), got.size(), off));
  got.resize(10000);
  EXPECT_TRUE(t::SameBytes(data, got));
  // Below it, a hole: zeros.
  std::vector<char> hole(4096, 'x');
  ASSERT_EQ(4096, Read(fd, hole.data(), hole.size(), off - 4096));
  EXPECT_EQ(std::vector<char>(4096, 0), hole);
  // Cross-checked by the system call itself.
  std::vector<char> sys(10000);
  ASSERT_EQ(10000, pread(fd, sys.data(), sys.size(), off));
  EXPECT_TRUE(t::SameBytes(data, sys));
  EXPECT_EQ(0, Close(fd));
}

// Vectors, and -1: at the descriptor's position, which moves.
TEST_P(Fs, VectorsAndThePosition) {
  int fd = Open(P("vec"), O_CREAT | O_RDWR | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  std::vector<char> a = t::RandomBytes(1000, 1), b = t::RandomBytes(3000, 2),
                    c = t::RandomBytes(5, 3);
  struct iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()},
                         {c.data(), c.size()}};
  Req w;
  ASSERT_EQ(0, ursa_fs_writev(loop(), &w.r, fd, iov, 3, -1, 0, Done));
  ASSERT_EQ(4005, Wait(w));
  EXPECT_EQ(4005, lseek(fd, 0, SEEK_CUR)) << "the position moved";
  std::vector<char> all;
  for (auto *v : {&a, &b, &c}) all.insert(all.end(), v->begin(), v->end());
  std::vector<char> x(2000), y(2005);
  struct iovec rv[2] = {{x.data(), x.size()}, {y.data(), y.size()}};
  Req r;
  ASSERT_EQ(0, ursa_fs_readv(loop(), &r.r, fd, rv, 2, 0, 0, Done));
  ASSERT_EQ(4005, Wait(r));
  std::vector<char> got(x);
  got.insert(got.end(), y.begin(), y.end());
  EXPECT_TRUE(t::SameBytes(all, got));
  // Sequential reads at the position.
  ASSERT_EQ(0, lseek(fd, 0, SEEK_SET));
  std::vector<char> seq(1500 + 4000);
  ASSERT_EQ(1500, Read(fd, seq.data(), 1500, -1));
  ASSERT_EQ(2505, Read(fd, seq.data() + 1500, 4000, -1));
  ASSERT_EQ(0, Read(fd, seq.data(), 10, -1));
  seq.resize(4005);
  EXPECT_TRUE(t::SameBytes(all, seq));
  EXPECT_EQ(0, Close(fd));
}

TEST_P(Fs, DirectoryOperations) {
  Req m;
  ASSERT_EQ(0, ursa_fs_mkdir(loop(), &m.r, AT_FDCWD, P("d").c_str(), 0750,
                             Done));
  ASSERT_EQ(0, Wait(m));
  struct statx st {};
  ASSERT_EQ(0, Statx(P("d"), &st));
  EXPECT_TRUE(S_ISDIR(st.stx_mode));
  Req again;
  ASSERT_EQ(0, ursa_fs_mkdir(loop(), &again.r, AT_FDCWD, P("d").c_str(),
                             0750, Done));
  EXPECT_EQ(-EEXIST, Wait(again));

  int fd = Open(P("f"), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(3, Write(fd, "abc", 3, 0));
  ASSERT_EQ(0, Close(fd));
  Req rn;
  ASSERT_EQ(0, ursa_fs_rename(loop(), &rn.r, AT_FDCWD, P("f").c_str(),
                              AT_FDCWD, P("d/g").c_str(), 0, Done));
  ASSERT_EQ(0, Wait(rn));
  EXPECT_EQ(-ENOENT, Statx(P("f"), &st));
  ASSERT_EQ(0, Statx(P("d/g"), &st));
  EXPECT_EQ(3u, st.stx_size);
  // RENAME_NOREPLACE onto a name that exists.
  fd = Open(P("h"), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, Close(fd));
  Req nr;
  ASSERT_EQ(0, ursa_fs_rename(loop(), &nr.r, AT_FDCWD, P("h").c_str(),
                              AT_FDCWD, P("d/g").c_str(), RENAME_NOREPLACE,
                              Done));
  EXPECT_EQ(-EEXIST, Wait(nr));
  // The directory is not empty; then it is.
  Req rd;
  ASSERT_EQ(0, ursa_fs_unlink(loop(), &rd.r, AT_FDCWD, P("d").c_str(),
                              AT_REMOVEDIR, Done));
  EXPECT_EQ(-ENOTEMPTY, Wait(rd));
  Req u1;
  ASSERT_EQ(0, ursa_fs_unlink(loop(), &u1.r, AT_FDCWD, P("d/g").c_str(), 0,
                              Done));
  ASSERT_EQ(0, Wait(u1));
  Req u2;
  ASSERT_EQ(0, ursa_fs_unlink(loop(), &u2.r, AT_FDCWD, P("d/g").c_str(), 0,
                              Done));
  EXPECT_EQ(-ENOENT, Wait(u2));
  Req rd2;
  ASSERT_EQ(0, ursa_fs_unlink(loop(), &rd2.r, AT_FDCWD, P("d").c_str(),
                              AT_REMOVEDIR, Done));
  EXPECT_EQ(0, Wait(rd2));
  EXPECT_EQ(-ENOENT, Statx(P("d"), &st));
}

TEST_P(Fs, ErrorsAreTheSystemCalls) {
  char buf[16];
  EXPECT_EQ(-ENOENT, Open(P("missing"), O_RDONLY));
  EXPECT_EQ(-EISDIR, Open(dir_->path(), O_WRONLY));
  int d = Open(dir_->path(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(d, 0);
  EXPECT_EQ(-EISDIR, Read(d, buf, sizeof(buf), 0));
  EXPECT_EQ(-EBADF, Read(1000000, buf, sizeof(buf), 0)) << "not open";
  int ro = Open(P("ro"), O_CREAT | O_RDONLY, 0400);
  ASSERT_GE(ro, 0);
  EXPECT_EQ(-EBADF, Write(ro, "x", 1, 0)) << "opened read-only";
  EXPECT_EQ(0, Close(ro));
  // openat2's rules: beneath dirfd, no links.  Where this process has no
  // openat2 (valgrind does not know it) the epoll backend's pool cannot
  // keep them and says so; io_uring's openat2 is the kernel's own.
  ASSERT_EQ(0, symlink("ro", P("link").c_str()));
  struct open_how how {};
  long sys = syscall(SYS_openat2, d, "ro", &how, sizeof(how));
  bool have = sys >= 0 || errno != ENOSYS;
  if (sys >= 0) close((int)sys);
  bool rules = have || GetParam() == URSA_BACKEND_URING;
  EXPECT_EQ(rules ? -EXDEV : -ENOSYS,
            Open("../etc", O_RDONLY, 0, RESOLVE_BENEATH, d));
  EXPECT_EQ(rules ? -ELOOP : -ENOSYS,
            Open("link", O_RDONLY, 0, RESOLVE_NO_SYMLINKS, d));
  int ok = Open("link", O_RDONLY, 0, rules ? RESOLVE_BENEATH : 0, d);
  EXPECT_GE(ok, 0) << ursa_strerror(ok);
  if (ok >= 0) {
    EXPECT_EQ(0, Close(ok));
  }
  // O_CLOEXEC is always on.
  int fd = Open(P("ro"), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(0, Close(fd));
  EXPECT_EQ(0, Close(d));
  EXPECT_EQ(-EBADF, Close(d)) << "twice";
}

// EACCES: a file of mode 0, opened by a process with no capabilities
// (root in a user namespace, as under Bazel's sandbox, cannot become
// another user, but it can give up CAP_DAC_OVERRIDE).  The process is
// this test binary again, spawned (not forked: the pool's threads are
// running) to run only this test, in the child's part.
TEST_P(Fs, PermissionDeniedIsEacces) {
  if (const char *child = getenv("URSA_FS_EACCES_CHILD")) {
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2] = {};
    if (syscall(SYS_capset, &hdr, none) != 0) _exit(10);
    Req q;
    if (ursa_fs_open(loop(), &q.r, AT_FDCWD, child, O_RDONLY, 0, 0, Done))
      _exit(12);
    _exit(Wait(q) == -EACCES ? 0 : 13);
  }
  int fd = Open(P("secret"), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, Close(fd));
  std::string path = P("secret");
  ASSERT_EQ(0, chmod(path.c_str(), 0));
  std::string filter = std::string("--gtest_filter=Backends/Fs.PermissionDeniedIsEacces/") +
                       (GetParam() == URSA_BACKEND_EPOLL ? "epoll" : "uring");
  std::string env = "URSA_FS_EACCES_CHILD=" + path;
  char *argv[] = {(char *)"fs_test", (char *)filter.c_str(), nullptr};
  char *envp[] = {(char *)env.c_str(), nullptr};
  pid_t pid;
  // argv[0], not /proc/self/exe, which under valgrind is valgrind's.
  std::string self = ::testing::internal::GetArgvs()[0];
  ASSERT_EQ(0, posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv,
                           envp));
  int status = 0;
  ASSERT_EQ(pid, waitpid(pid, &status, 0));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(0, WEXITSTATUS(status)) << "10-12: set-up; 13: not EACCES";
}

// A read of a pipe with no writer waits without stalling the loop: a
// timer fires meanwhile; a cancel then ends it (io_uring), or it finishes
// with the bytes once written (a pool thread cannot be interrupted).
TEST_P(Fs, AWaitingReadNeverStallsTheLoop) {
  int p[2];
  ASSERT_EQ(0, pipe(p));
  char buf[64] = {0};
  Req r;
  ASSERT_EQ(0, ursa_fs_read(loop(), &r.r, p[0], buf, sizeof(buf), -1, Done));
  ursa_timer tm{};
  static int fired;
  fired = 0;
  ASSERT_EQ(0, ursa_timer_start(loop(), &tm, 20, 0,
                                [](ursa_timer *, int) { fired++; }));
  ASSERT_TRUE(lp_->RunUntil([&] { return fired > 0; }));
  EXPECT_EQ(0, r.calls) << "still waiting for data";
  int c = ursa_fs_cancel(&r.r);
  EXPECT_TRUE(c == 0 || c == -EALREADY) << c;
  ASSERT_EQ(5, write(p[1], "hello", 5));
  int res = Wait(r);
  if (GetParam() == URSA_BACKEND_URING) {
    EXPECT_EQ(-ECANCELED, res);
  } else {
    EXPECT_EQ(5, res);
    EXPECT_EQ(std::string("hello"), std::string(buf, 5));
  }
  close(p[0]);
  close(p[1]);
}

// Cancel before the request has started: on epoll, queued behind work
// that holds the pool's one thread, so its callback has -ECANCELED and it
// never ran; on io_uring, in the ring ahead of its cancel.
// Then a cancel of one called back is -ENOENT.
void Hold(ursa_work *w) {
  auto *flag = static_cast<std::atomic<bool> *>(w->data);
  while (!flag->load()) usleep(1000);
}

TEST_P(Fs, CancelInEachState) {
  int fd = Open(P("c"), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  std::atomic<bool> release{false};
  ursa_work hold{};
  hold.data = &release;
  ASSERT_EQ(0, ursa_work_pool_size(1));
  static int held;
  held = 0;
  ASSERT_EQ(0, ursa_work_queue(loop(), &hold, Hold,
                               [](ursa_work *, int) { held++; }));
  // On io_uring, more writes than the submission queue's 256 entries; on
  // epoll a few behind the blocker do (600 pool jobs through one thread
  // took over 20 s under valgrind).
  std::vector<Req> w(GetParam() == URSA_BACKEND_URING ? 300 : 20);
  for (size_t i = 0; i < w.size(); i++)
    ASSERT_EQ(0, ursa_fs_write(loop(), &w[i].r, fd, "z", 1, (int64_t)i,
                               Done));
  Req &last = w.back();
  EXPECT_EQ(0, ursa_fs_cancel(&last.r));
  EXPECT_EQ(0, ursa_fs_cancel(&last.r)) << "asked again: still 0";
  release = true;
  // The work too: its memory is this frame's.
  ASSERT_TRUE(lp_->RunUntil([&] {
    for (auto &q : w)
      if (!q.calls) return false;
    return held > 0;
  }));
  ASSERT_EQ(0, ursa_work_pool_size(4));
  for (size_t i = 0; i + 1 < w.size(); i++) EXPECT_EQ(1, w[i].res) << i;
  char byte = 0;
  int tail = Read(fd, &byte, 1, (int64_t)w.size() - 1);
  if (GetParam() == URSA_BACKEND_EPOLL) {
    EXPECT_EQ(-ECANCELED, last.res);
    EXPECT_EQ(0, tail) << "the cancelled write never ran";
  } else {
    // The SQE was in the ring before its cancel, which the kernel runs in
    // order: the write may have finished first.  Either way the result
    // says what happened to the file.
    EXPECT_TRUE(last.res == -ECANCELED || last.res == 1) << last.res;
    EXPECT_EQ(last.res == 1 ? 1 : 0, tail);
  }
  EXPECT_EQ(-ENOENT, ursa_fs_cancel(&last.r)) << "called back";
  EXPECT_EQ(0, Close(fd));
}

TEST_P(Fs, BadArgumentsAreRefusedAndNamed) {
  Req q;
  char buf[8];
  EXPECT_EQ(-EINVAL, ursa_fs_read(nullptr, &q.r, 0, buf, 8, 0, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_read(loop(), nullptr, 0, buf, 8, 0, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_read(loop(), &q.r, 0, buf, 8, 0, nullptr));
  EXPECT_EQ(-EINVAL, ursa_fs_read(loop(), &q.r, -3, buf, 8, 0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "descriptor -3"));
  EXPECT_EQ(-EINVAL, ursa_fs_read(loop(), &q.r, 0, buf, 8, -2, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "offset -2"));
  EXPECT_EQ(-EINVAL, ursa_fs_read(loop(), &q.r, 0, nullptr, 8, 0, Done));
  struct iovec iov = {buf, 8};
  EXPECT_EQ(-EINVAL, ursa_fs_readv(loop(), &q.r, 0, &iov, 0, 0, 0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "0 iovecs"));
  EXPECT_EQ(-EINVAL, ursa_fs_writev(loop(), &q.r, 0, &iov, 5000, 0, 0, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_open(loop(), &q.r, -5, "x", O_RDONLY, 0, 0,
                                  Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "-5"));
  EXPECT_EQ(-EINVAL, ursa_fs_open(loop(), &q.r, AT_FDCWD, nullptr, O_RDONLY,
                                  0, 0, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_open(loop(), &q.r, AT_FDCWD, "x", O_RDONLY,
                                  0644, 0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "without O_CREAT"));
  EXPECT_EQ(-EINVAL, ursa_fs_open(loop(), &q.r, AT_FDCWD, "x", O_CREAT,
                                  010000, 0, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_statx(loop(), &q.r, AT_FDCWD, "x", 0,
                                   STATX_SIZE, nullptr, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_unlink(loop(), &q.r, AT_FDCWD, "x", 0x1,
                                    Done));
  EXPECT_EQ(-EINVAL, ursa_fs_rename(loop(), &q.r, AT_FDCWD, "x", AT_FDCWD,
                                    nullptr, 0, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "new path"));
  EXPECT_EQ(-EINVAL, ursa_fs_mkdir(loop(), &q.r, AT_FDCWD, "x", 0200000,
                                   Done));
  EXPECT_EQ(-EINVAL, ursa_fs_close(loop(), &q.r, -1, Done));
  EXPECT_EQ(-EINVAL, ursa_fs_cancel(nullptr));
  EXPECT_EQ(-ENOENT, ursa_fs_cancel(&q.r)) << "never started";
  EXPECT_EQ(0, q.calls) << "refused calls never call back";
  // An active request is not started twice.
  int p[2];
  ASSERT_EQ(0, pipe(p));
  ASSERT_EQ(0, ursa_fs_read(loop(), &q.r, p[0], buf, 8, -1, Done));
  EXPECT_EQ(-EBUSY, ursa_fs_read(loop(), &q.r, p[0], buf, 8, -1, Done));
  ASSERT_EQ(1, write(p[1], "!", 1));
  EXPECT_EQ(1, Wait(q));
  close(p[0]);
  close(p[1]);
}

// statx of an open descriptor with AT_STATX_DONT_SYNC is taken at once
// (FILE_INLINE): the same answer as through the ring, the callback still
// from the loop, an error (EBADF) the same too.
TEST_P(Fs, StatxOfADescriptorAtOnce) {
  int fd = Open(P("s"), O_CREAT | O_RDWR, 0640);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(12345, Write(fd, std::vector<char>(12345, 'q').data(), 12345, 0));
  struct statx ring {}, now {};
  ASSERT_EQ(0, Statx("", &ring, fd, AT_EMPTY_PATH));
  Req q;
  ASSERT_EQ(0, ursa_fs_statx(loop(), &q.r, fd, "",
                             AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
                             STATX_BASIC_STATS, &now, Done));
  EXPECT_EQ(0, q.calls) << "never inside the call";
  EXPECT_EQ(0, Wait(q));
  EXPECT_EQ(12345u, now.stx_size);
  EXPECT_EQ(ring.stx_ino, now.stx_ino);
  EXPECT_EQ(ring.stx_mode, now.stx_mode);
  EXPECT_EQ(0, Close(fd));
  Req bad;
  ASSERT_EQ(0, ursa_fs_statx(loop(), &bad.r, fd, "",
                             AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
                             STATX_BASIC_STATS, &now, Done));
  EXPECT_EQ(-EBADF, Wait(bad));
}

// A FIFO opened with O_NONBLOCK answers at once, and statx tells it from
// a regular file (what a static file server checks before it reads).
TEST_P(Fs, FifoOpensAtOnceWithNonblock) {
  ASSERT_EQ(0, mkfifo(P("fifo").c_str(), 0600));
  int fd = Open(P("fifo"), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(fd, 0) << ursa_strerror(fd);
  struct statx st {};
  ASSERT_EQ(0, Statx("", &st, fd, AT_EMPTY_PATH));
  EXPECT_TRUE(S_ISFIFO(st.stx_mode));
  EXPECT_EQ(0, Close(fd));
}

// Reads a file in chunk-sized reads, depth of them in flight.
struct ChunkReader {
  struct Slot {
    ursa_fs_req r{};
    ChunkReader *rd = nullptr;
  };
  ChunkReader(ursa_loop *l, int f, std::vector<char> *g, size_t c,
              unsigned depth)
      : loop(l), fd(f), got(g), chunk(c), slots(depth) {
    for (auto &s : slots) {
      s.rd = this;
      Issue(&s);
    }
  }
  static void Cb(ursa_fs_req *r, int res) {
    auto *s = reinterpret_cast<Slot *>(r);
    ChunkReader *rd = s->rd;
    if (res != (int)rd->chunk) rd->bad++;
    rd->done++;
    rd->Issue(s);
  }
  void Issue(Slot *s) {
    if (next >= got->size()) return;
    size_t at = next;
    next += chunk;
    if (ursa_fs_read(loop, &s->r, fd, &(*got)[at], chunk, (int64_t)at, Cb))
      bad++;
  }
  ursa_loop *loop;
  int fd;
  std::vector<char> *got;
  size_t chunk, next = 0, done = 0;
  int bad = 0;
  std::vector<Slot> slots;
};

// Reads done on the loop's thread (URSA_FEAT_FILE_INLINE) give the same
// bytes as the ring's, on tmpfs (plain pread after a verdict) and on the
// test's file system (RWF_NOWAIT), at depth 1 and 16; and the tmpfs
// verdict follows the descriptor, not its number: closed with close(2)
// and the number reused for a file elsewhere, a read reads that file.
TEST_P(Fs, InlineReadsMatchTheRingAndFollowTheDescriptor) {
  struct statfs sf;
  ASSERT_EQ(0, statfs("/dev/shm", &sf));
  EXPECT_EQ((long)TMPFS_MAGIC, (long)sf.f_type) << "/dev/shm is not tmpfs";
  std::string shm = "/dev/shm/ursa-fs-test-" + std::to_string(getpid());
  std::vector<char> a = t::RandomBytes(1 << 20, 11), b = t::RandomBytes(
                                                         1 << 20, 12);
  for (int inline_on = 0; inline_on < 2; inline_on++) {
    ursa_loop_options o = t::OptionsFor(GetParam());
    if (!inline_on) o.disable = URSA_FEAT_FILE_INLINE;
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    ursa_features f;
    ursa_loop_features(lp.get(), &f);
    EXPECT_EQ(inline_on != 0, (f.used & URSA_FEAT_FILE_INLINE) != 0);
    for (const std::string &path : {shm, P("disk")}) {
      int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC,
                    0600);
      ASSERT_GE(fd, 0);
      ASSERT_EQ((ssize_t)a.size(), pwrite(fd, a.data(), a.size(), 0));
      for (unsigned depth : {1u, 16u}) {
        std::vector<char> got(a.size());
        ChunkReader rd(lp.get(), fd, &got, 4096, depth);
        ASSERT_TRUE(lp.RunUntil([&] { return rd.done == a.size() / 4096; }));
        EXPECT_EQ(0, rd.bad);
        EXPECT_TRUE(t::SameBytes(a, got)) << path << " depth " << depth;
      }
      close(fd);
    }
    // The number of a tmpfs descriptor, reused for a file elsewhere.
    int fd = open(shm.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    // Zero-filled: valgrind does not see the ring write into them.
    char c1[8] = {0}, c2[8] = {0};
    Req r1;
    ASSERT_EQ(0, ursa_fs_read(lp.get(), &r1.r, fd, c1, 8, 0, Done));
    ASSERT_TRUE(lp.RunUntil([&] { return r1.calls > 0; }));
    ASSERT_EQ(8, r1.res);
    close(fd);
    int other = open(P("other").c_str(), O_CREAT | O_TRUNC | O_RDWR |
                                             O_CLOEXEC, 0600);
    ASSERT_EQ(fd, other) << "the lowest number is reused";
    ASSERT_EQ((ssize_t)b.size(), pwrite(other, b.data(), b.size(), 0));
    Req r2;
    ASSERT_EQ(0, ursa_fs_read(lp.get(), &r2.r, other, c2, 8, 0, Done));
    ASSERT_TRUE(lp.RunUntil([&] { return r2.calls > 0; }));
    ASSERT_EQ(8, r2.res);
    EXPECT_EQ(0, memcmp(c1, a.data(), 8));
    EXPECT_EQ(0, memcmp(c2, b.data(), 8)) << "read the new file";
    // ... and reused for a pipe: a positioned read is refused (ESPIPE),
    // never a read that waits on the loop's thread.
    close(other);
    int p[2];
    ASSERT_EQ(0, pipe(p));
    ASSERT_EQ(fd, p[0]);
    Req r3;
    ASSERT_EQ(0, ursa_fs_read(lp.get(), &r3.r, p[0], c2, 8, 0, Done));
    ASSERT_EQ(3, write(p[1], "abc", 3));
    ASSERT_TRUE(lp.RunUntil([&] { return r3.calls > 0; }));
    EXPECT_TRUE(r3.res == -ESPIPE || r3.res == 3) << r3.res;
    close(p[0]);
    close(p[1]);
    lp.Finish();
  }
  unlink(shm.c_str());
}

INSTANTIATE_TEST_SUITE_P(Backends, Fs, ::testing::ValuesIn(t::kBackends),
                         t::BackendName);

}  // namespace

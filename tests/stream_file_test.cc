// stream_file_test.cc - file writes (ursa_write_file, stream_file.c) under
// every ring variant and both backends: a file range between buffer
// writes arrives byte-exact and in order, from a cached file (sendfile),
// tmpfs, an uncached one and on direct streams (reads into the request's
// buffer); a file shorter than the range fails with -ENODATA after its
// bytes and tears the stream; a peer that does not read holds the write
// without holding the file in memory; cancel and close mid-file; bad
// arguments.  All of it again with URSA_FEAT_FILE_SPLICE (splices through
// the loop's pipes), whose pool is held to its bound.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>

#include "tests/stream_util.h"

namespace {

using namespace st;

struct FReq {
  ursa_write_req w{};
  int status = 1;
  int calls = 0;
  size_t done = 0;
};

void FDone(ursa_write_req *w, int st) {
  auto *q = static_cast<FReq *>(w->data);
  q->status = st;
  q->calls++;
  q->done = w->done;
}

// A file of n random bytes at path; its bytes.
std::vector<char> MakeFile(const std::string &path, size_t n, uint32_t seed,
                           bool uncached = false) {
  std::vector<char> b = t::RandomBytes(n, seed);
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  EXPECT_EQ((ssize_t)n, write(fd, b.data(), n));
  if (uncached) {
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  close(fd);
  return b;
}

// "head", a range of each file, "tail": in order and byte-exact, each
// request called back once with all its bytes.
TEST_P(Stream, FileRangesArriveInOrderBetweenWrites) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  t::TempDir dir("ursa-sf");
  std::string shm = "/dev/shm/ursa-sf-" + std::to_string(getpid());
  struct Src {
    std::string path;
    std::vector<char> bytes;
    size_t off, len;
  };
  std::vector<Src> srcs;
  srcs.push_back({dir.path() + "/cached", {}, 12345, 3 << 20});
  srcs[0].bytes = MakeFile(srcs[0].path, (3 << 20) + 20000, 1);
  srcs.push_back({shm, {}, 0, 700001});
  srcs[1].bytes = MakeFile(shm, 700001, 2);
  srcs.push_back({dir.path() + "/cold", {}, 4096, 1 << 20});
  srcs[2].bytes = MakeFile(srcs[2].path, (1 << 20) + 8192, 3, true);
  std::vector<char> head = t::RandomBytes(777, 4), tail = t::RandomBytes(5, 5);
  std::vector<char> want(head);
  std::vector<FReq> r(2 + srcs.size());
  std::vector<int> fds;
  for (auto &q : r) q.w.data = &q;
  ASSERT_EQ(0, ursa_write(&r[0].w, &a.s, head.data(), head.size(), 0, FDone));
  for (size_t i = 0; i < srcs.size(); i++) {
    int fd = open(srcs[i].path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    ASSERT_EQ(0, ursa_write_file(&r[1 + i].w, &a.s, fd,
                                 (int64_t)srcs[i].off, srcs[i].len, FDone));
    want.insert(want.end(), srcs[i].bytes.begin() + srcs[i].off,
                srcs[i].bytes.begin() + srcs[i].off + srcs[i].len);
  }
  ASSERT_EQ(0, ursa_write(&r.back().w, &a.s, tail.data(), tail.size(), 0,
                          FDone));
  want.insert(want.end(), tail.begin(), tail.end());
  std::vector<char> got(want.size());
  bool ok = false;
  std::thread reader(
      [&] { ok = t::ReadExactly(peer.fd_, got.data(), got.size()); });
  bool all = RunUntil([&] {
    for (auto &q : r)
      if (!q.calls) return false;
    return true;
  });
  reader.join();
  ASSERT_TRUE(all);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(t::SameBytes(want, got));
  EXPECT_EQ(head.size(), r[0].done);
  for (size_t i = 0; i < srcs.size(); i++) {
    EXPECT_EQ(0, r[1 + i].status) << i << ": " << ursa_err_name(r[1 + i].status);
    EXPECT_EQ(1, r[1 + i].calls) << i;
    EXPECT_EQ(srcs[i].len, r[1 + i].done) << i;
  }
  EXPECT_EQ(0, r.back().status);
  EXPECT_EQ(0u, ursa_write_queue_size(&a.s));
  for (int fd : fds) close(fd);
  unlink(shm.c_str());
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  peer.CloseListener(loop_.get());
}

// A file shorter than its range: -ENODATA after the bytes it had, and the
// write queued behind it never goes out; the peer gets exactly those bytes.
TEST_P(Stream, AFileThatEndsSoonerFailsTheWriteAndTearsTheStream) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  t::TempDir dir("ursa-sf");
  std::vector<char> bytes = MakeFile(dir.path() + "/short", 100000, 7);
  int fd = open((dir.path() + "/short").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  FReq f, after;
  f.w.data = &f;
  after.w.data = &after;
  ASSERT_EQ(0, ursa_write_file(&f.w, &a.s, fd, 1000, 1 << 20, FDone));
  ASSERT_EQ(0, ursa_write(&after.w, &a.s, "x", 1, 0, FDone));
  ASSERT_TRUE(RunUntil([&] { return f.calls && after.calls; }));
  EXPECT_EQ(-ENODATA, f.status) << ursa_err_name(f.status);
  EXPECT_EQ(99000u, f.done);
  EXPECT_NE(0, after.status) << "nothing after a torn file write";
  FReq again;
  again.w.data = &again;
  EXPECT_EQ(-ENODATA, ursa_write(&again.w, &a.s, "y", 1, 0, FDone))
      << "the stream's write error";
  std::vector<char> got(99000);
  ASSERT_TRUE(t::ReadExactly(peer.fd_, got.data(), got.size()));
  EXPECT_TRUE(t::SameBytes(
      std::vector<char>(bytes.begin() + 1000, bytes.end()), got));
  close(fd);
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  char c;
  EXPECT_EQ(0, read(peer.fd_, &c, 1)) << "no byte after the file's";
  peer.CloseListener(loop_.get());
}

// A peer that does not read: a 64 MiB file write waits with part of it
// sent, the process's resident memory does not grow by the file; a
// cancel then ends it (-ECANCELED after bytes went: the stream is torn),
// and the close that follows completes.
TEST_P(Stream, AnUnreadFileWriteHoldsNoFileAndCancels) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  int rcv = 65536;
  setsockopt(peer.fd_, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  std::string shm = "/dev/shm/ursa-sf-big-" + std::to_string(getpid());
  int fd = open(shm.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, ftruncate(fd, 64 << 20));
  auto rss = [] {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
      if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
      fclose(f);
    }
    return res * 4096;
  };
  long before = rss();
  FReq f;
  f.w.data = &f;
  ASSERT_EQ(0, ursa_write_file(&f.w, &a.s, fd, 0, 64 << 20, FDone));
  // Run a while: the socket fills and the write waits.
  ursa_timer tm{};
  static bool fired;
  fired = false;
  ASSERT_EQ(0, ursa_timer_start(loop(), &tm, 300, 0,
                                [](ursa_timer *, int) { fired = true; }));
  ASSERT_TRUE(RunUntil([&] { return fired; }));
  EXPECT_EQ(0, f.calls) << "still waiting for the peer";
  EXPECT_LT(ursa_write_queue_size(&a.s), (size_t)64 << 20) << "some went";
  EXPECT_LT(rss() - before, 8l << 20) << "the file is not in memory";
  EXPECT_EQ(0, ursa_write_cancel(&f.w));
  ASSERT_TRUE(RunUntil([&] { return f.calls > 0; }));
  EXPECT_EQ(-ECANCELED, f.status);
  EXPECT_GT(f.done, 0u);
  FReq later;
  later.w.data = &later;
  EXPECT_EQ(-ECANCELED, ursa_write(&later.w, &a.s, "z", 1, 0, FDone))
      << "torn: part of the file went";
  close(fd);
  unlink(shm.c_str());
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  peer.CloseListener(loop_.get());
}

// A close while a file write is under way calls it back with -ECANCELED
// and completes.
TEST_P(Stream, CloseDuringAFileWrite) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  t::TempDir dir("ursa-sf");
  MakeFile(dir.path() + "/f", 8 << 20, 9);
  int fd = open((dir.path() + "/f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  FReq f;
  f.w.data = &f;
  ASSERT_EQ(0, ursa_write_file(&f.w, &a.s, fd, 0, 8 << 20, FDone));
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed && f.calls; }));
  EXPECT_EQ(1, f.calls);
  EXPECT_TRUE(f.status == -ECANCELED || f.status == 0) << f.status;
  close(fd);
  peer.CloseListener(loop_.get());
}

// The pipes the loop holds now ("pipe:" entries of /proc/self/fd).
int PipeFds() {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (struct dirent *e = readdir(d)) {
    char path[300], link[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(path, link, sizeof(link) - 1);
    if (k > 0 && (link[k] = 0, !strncmp(link, "pipe:", 5))) n++;
  }
  closedir(d);
  return n;
}

// 20 streams, each with a 1 MiB file write its peer does not read at
// first: with splicing, the writes in flight hold at most 16 of the
// loop's pipes (the rest go as without it), and every peer then gets its
// range byte-exact; without it, no pipe is made.
TEST_P(Stream, SplicedFileWritesShareABoundedPoolOfPipes) {
  constexpr int kStreams = 20;
  constexpr size_t kLen = 1 << 20;
  t::TempDir dir("ursa-sf");
  std::vector<char> bytes = MakeFile(dir.path() + "/f", kLen + 333, 11);
  int fd = open((dir.path() + "/f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  int before = PipeFds();
  ursa_features feat;
  ursa_loop_features(loop(), &feat);
  bool splicing = feat.used & URSA_FEAT_FILE_SPLICE;
  std::vector<ursa_stream> s(kStreams);
  std::vector<FReq> r(kStreams);
  std::vector<int> peer(kStreams);
  static int closed;
  closed = 0;
  for (int i = 0; i < kStreams; i++) {
    int sv[2];
    ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    peer[i] = sv[1];
    s[i] = ursa_stream{};
    ASSERT_EQ(0, ursa_stream_open(loop(), &s[i], sv[0]));
    r[i].w.data = &r[i];
    ASSERT_EQ(0, ursa_write_file(&r[i].w, &s[i], fd, 333, kLen, FDone));
  }
  ursa_timer tm{};
  static bool fired;
  fired = false;
  ASSERT_EQ(0, ursa_timer_start(loop(), &tm, 200, 0,
                                [](ursa_timer *, int) { fired = true; }));
  ASSERT_TRUE(RunUntil([&] { return fired; }));
  int held = PipeFds() - before;
  if (splicing) {
    EXPECT_GT(held, 0) << "spliced writes use the loop's pipes";
    EXPECT_LE(held, 2 * 16) << "at most 16 pipes";
  } else {
    EXPECT_EQ(0, held) << "no pipe without splicing";
  }
  std::vector<std::vector<char>> got(kStreams, std::vector<char>(kLen));
  std::vector<int> ok(kStreams); // not vector<bool>: one word, many writers
  std::vector<std::thread> readers;
  for (int i = 0; i < kStreams; i++)
    readers.emplace_back([&, i] {
      ok[i] = t::ReadExactly(peer[i], got[i].data(), kLen);
    });
  bool all = RunUntil([&] {
    for (auto &q : r)
      if (!q.calls) return false;
    return true;
  });
  for (auto &th : readers) th.join();
  ASSERT_TRUE(all);
  std::vector<char> want(bytes.begin() + 333, bytes.end());
  for (int i = 0; i < kStreams; i++) {
    EXPECT_EQ(0, r[i].status) << i << ": " << ursa_err_name(r[i].status);
    EXPECT_EQ(kLen, r[i].done) << i;
    EXPECT_TRUE(ok[i]) << i;
    EXPECT_TRUE(t::SameBytes(want, got[i])) << i;
  }
  EXPECT_LE(PipeFds() - before, 2 * 16) << "the pool does not grow";
  for (int i = 0; i < kStreams; i++) {
    s[i].data = nullptr;
    ursa_stream_close(&s[i], [](ursa_handle *) { closed++; });
  }
  ASSERT_TRUE(RunUntil([&] { return closed == kStreams; }));
  for (int p : peer) close(p);
  close(fd);
}

TEST_P(Stream, FileWriteArgumentsAreChecked) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  FReq f;
  f.w.data = &f;
  EXPECT_EQ(-EINVAL, ursa_write_file(nullptr, &a.s, 0, 0, 1, FDone));
  EXPECT_EQ(-EINVAL, ursa_write_file(&f.w, nullptr, 0, 0, 1, FDone));
  EXPECT_EQ(-EINVAL, ursa_write_file(&f.w, &a.s, 0, 0, 1, nullptr));
  EXPECT_EQ(-EINVAL, ursa_write_file(&f.w, &a.s, -1, 0, 1, FDone));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "descriptor -1"));
  EXPECT_EQ(-EINVAL, ursa_write_file(&f.w, &a.s, 0, -5, 1, FDone));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "offset -5"));
  EXPECT_EQ(-EINVAL, ursa_write_file(&f.w, &a.s, 0, 0, 0, FDone));
  EXPECT_EQ(0, f.calls);
  // A descriptor that is not a file: the write fails with the error the
  // read or sendfile gave, and says so.
  int p[2];
  ASSERT_EQ(0, pipe(p));
  close(p[1]);
  ASSERT_EQ(0, ursa_write_file(&f.w, &a.s, p[0], 0, 10, FDone));
  ASSERT_TRUE(RunUntil([&] { return f.calls > 0; }));
  EXPECT_LT(f.status, 0);
  close(p[0]);
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  peer.CloseListener(loop_.get());
}

INSTANTIATE_TEST_SUITE_P(
    Rings, Stream,
    ::testing::Combine(::testing::ValuesIn(t::kVariants,
                                           t::kVariants + t::kNumVariants),
                       ::testing::Values(AF_INET)),
    ParamName);

// Spliced file writes (opt-in), alone and with every wait batched.
const t::Variant kSplice[] = {
    {"file_splice", 0, 0, 0, URSA_FEAT_FILE_SPLICE},
    {"file_splice_batched", 0, 0, 0, URSA_FEAT_FILE_SPLICE,
     URSA_BACKEND_AUTO, URSA_BATCH_ALWAYS},
};
INSTANTIATE_TEST_SUITE_P(Splice, Stream,
                         ::testing::Combine(::testing::ValuesIn(kSplice),
                                            ::testing::Values(AF_INET)),
                         ParamName);

}  // namespace

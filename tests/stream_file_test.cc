// stream_file_test.cc - file writes (ursa_write_file, stream_file.c) under
// every ring variant and both backends: a file range between buffer
// writes arrives byte-exact and in order, from a cached file (sendfile),
// tmpfs, an uncached one and on direct streams (reads into the request's
// buffer); a file shorter than the range fails with -ENODATA after its
// bytes and tears the stream; a peer that does not read holds the write
// without holding the file in memory; cancel and close mid-file; bad
// arguments.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
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

}  // namespace

// resolve_test.cc - name resolution off the loop: localhost and numeric
// addresses with ports and service names, a family filter, a name that
// does not exist, many at once, cancel (the answer that comes later is
// dropped and the loop still closes), bad arguments; on every variant.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil.h"

namespace {

// The pool's threads live on, so the process is multi-threaded when these
// tests fork, and ThreadSanitizer refuses to start threads in such a
// child; the tests run in the other configurations.
#if defined(__SANITIZE_THREAD__)
#define SKIP_FORK_UNDER_TSAN() \
  GTEST_SKIP() << "ThreadSanitizer cannot start threads after this fork"
#else
#define SKIP_FORK_UNDER_TSAN() (void)0
#endif

class Resolve : public t::LoopTest {};

struct Answer {
  ursa_resolve_req req{};
  int status = 1;
  int calls = 0;
  std::vector<std::string> addrs; /* "127.0.0.1:7000" */
  std::vector<int> families;
  std::string detail;
};

void OnResolved(ursa_resolve_req *req, int status, const ursa_addr *addrs,
                size_t n) {
  auto *a = reinterpret_cast<Answer *>(req);
  a->status = status;
  a->calls++;
  if (status < 0) a->detail = ursa_error_detail();
  for (size_t i = 0; i < n; i++) {
    char buf[128];
    ursa_addr_format((const sockaddr *)&addrs[i].ss, addrs[i].len, buf,
                     sizeof(buf));
    a->addrs.push_back(buf);
    a->families.push_back(addrs[i].ss.ss_family);
  }
}

bool Has(const std::vector<std::string> &v, const std::string &s) {
  for (auto &x : v)
    if (x == s) return true;
  return false;
}

TEST_P(Resolve, LocalhostAndNumericAddressesWithPorts) {
  Answer any, v4, num6, svc;
  ASSERT_EQ(0, ursa_resolve(loop(), &any.req, "localhost", "7000", AF_UNSPEC,
                            OnResolved));
  ASSERT_EQ(-EBUSY, ursa_resolve(loop(), &any.req, "localhost", "7000",
                                 AF_UNSPEC, OnResolved));
  ASSERT_EQ(0, ursa_resolve(loop(), &v4.req, "localhost", "7001", AF_INET,
                            OnResolved));
  ASSERT_EQ(0, ursa_resolve(loop(), &num6.req, "::1", "9", AF_UNSPEC,
                            OnResolved));
  bool have_services = access("/etc/services", R_OK) == 0;
  if (have_services) {
    ASSERT_EQ(0, ursa_resolve(loop(), &svc.req, "127.0.0.1", "http",
                              AF_UNSPEC, OnResolved));
  }
  ASSERT_TRUE(lp_->RunUntil([&] {
    return any.calls && v4.calls && num6.calls && (svc.calls || !have_services);
  }));
  EXPECT_EQ(0, any.status) << any.detail;
  EXPECT_TRUE(Has(any.addrs, "127.0.0.1:7000") || Has(any.addrs, "[::1]:7000"))
      << any.addrs.size() << " answers";
  EXPECT_EQ(0, v4.status) << v4.detail;
  EXPECT_TRUE(Has(v4.addrs, "127.0.0.1:7001"));
  for (int f : v4.families) EXPECT_EQ(AF_INET, f);
  EXPECT_EQ(0, num6.status) << num6.detail;
  EXPECT_EQ(std::vector<std::string>{"[::1]:9"}, num6.addrs);
  if (have_services) {
    EXPECT_EQ(0, svc.status) << svc.detail;
    EXPECT_EQ(std::vector<std::string>{"127.0.0.1:80"}, svc.addrs);
  }
  for (Answer *a : {&any, &v4, &num6}) EXPECT_EQ(1, a->calls);
}

// A name in the reserved .invalid domain never exists: -ENOENT, or
// -EAGAIN where no resolver can be asked at all, each with getaddrinfo's
// words; an unknown service is -ENOENT too.
TEST_P(Resolve, NamesThatFailSayHow) {
  Answer bad, svc;
  ASSERT_EQ(0, ursa_resolve(loop(), &bad.req, "nosuchhost.invalid", NULL,
                            AF_UNSPEC, OnResolved));
  ASSERT_EQ(0, ursa_resolve(loop(), &svc.req, "127.0.0.1", "no-such-service",
                            AF_UNSPEC, OnResolved));
  ASSERT_TRUE(lp_->RunUntil([&] { return bad.calls && svc.calls; }));
  EXPECT_TRUE(bad.status == -ENOENT || bad.status == -EAGAIN)
      << ursa_err_name(bad.status);
  EXPECT_NE(std::string::npos, bad.detail.find("nosuchhost.invalid"))
      << bad.detail;
  EXPECT_TRUE(bad.addrs.empty());
  EXPECT_EQ(-ENOENT, svc.status) << ursa_err_name(svc.status);
}

// Twenty at once all come back; a cancelled one is called back once with
// -ECANCELED, its late answer dropped, and nothing keeps the loop open.
TEST_P(Resolve, ManyAtOnceAndCancel) {
  std::vector<Answer> as(20);
  for (size_t i = 0; i < as.size(); i++)
    ASSERT_EQ(0, ursa_resolve(loop(), &as[i].req, "localhost",
                              std::to_string(1000 + i).c_str(), AF_INET,
                              OnResolved));
  Answer c;
  ASSERT_EQ(0, ursa_resolve(loop(), &c.req, "localhost", "1", AF_INET,
                            OnResolved));
  EXPECT_EQ(0, ursa_resolve_cancel(&c.req));
  EXPECT_EQ(-EALREADY, ursa_resolve_cancel(&c.req));
  ASSERT_TRUE(lp_->RunUntil([&] {
    for (auto &a : as)
      if (!a.calls) return false;
    return c.calls > 0;
  }));
  EXPECT_EQ(-ECANCELED, c.status);
  EXPECT_EQ(1, c.calls);
  EXPECT_TRUE(c.addrs.empty());
  for (size_t i = 0; i < as.size(); i++) {
    EXPECT_EQ(0, as[i].status) << i << ": " << as[i].detail;
    EXPECT_TRUE(Has(as[i].addrs, "127.0.0.1:" + std::to_string(1000 + i)));
  }
  EXPECT_EQ(-ENOENT, ursa_resolve_cancel(&c.req));
  EXPECT_EQ(0u, ursa_loop_alive(loop())) << "the resolver holds the loop";
}

// The lookups run on the work pool, at most 4 threads by default, however
// many wait.
int LookupThreads() {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  while (struct dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
    FILE *f = fopen(path.c_str(), "r");
    char comm[32] = {0};
    if (f) {
      if (fgets(comm, sizeof(comm), f)) n += !strncmp(comm, "ursa-work", 9);
      fclose(f);
    }
  }
  closedir(d);
  return n;
}

TEST_P(Resolve, FortyLookupsShareAPoolOfFourThreads) {
  std::vector<Answer> as(40);
  for (size_t i = 0; i < as.size(); i++)
    ASSERT_EQ(0, ursa_resolve(loop(), &as[i].req, "localhost",
                              std::to_string(2000 + i).c_str(), AF_INET,
                              OnResolved));
  int most = 0;
  ASSERT_TRUE(lp_->RunUntil([&] {
    int n = LookupThreads();
    if (n > most) most = n;
    for (auto &a : as)
      if (!a.calls) return false;
    return true;
  }));
  for (size_t i = 0; i < as.size(); i++) {
    EXPECT_EQ(0, as[i].status) << i << ": " << as[i].detail;
    EXPECT_TRUE(Has(as[i].addrs, "127.0.0.1:" + std::to_string(2000 + i)));
  }
  EXPECT_GE(most, 1);
  EXPECT_LE(LookupThreads(), 4) << "the pool has more than its 4 threads";
  EXPECT_LE(most, 4);
}

// A lookup waiting behind busy pool threads: its cancel calls back at once
// and takes it off the pool, so its loop closes while the pool is still
// busy, and the pool goes on with the next work when the threads free up.
std::atomic<bool> hold_pool{false};
void HoldPool(ursa_work *) {
  while (hold_pool.load()) std::this_thread::yield();
}
void WorkDone(ursa_work *w, int status) { *(int *)w->data = status; }

TEST(ResolvePool, ACancelledQueuedLookupLetsItsLoopClose) {
  ASSERT_EQ(0, ursa_work_pool_size(1));
  t::Loop busy;
  hold_pool = true;
  ursa_work holder{};
  int held = 1;
  holder.data = &held;
  ASSERT_EQ(0, ursa_work_queue(busy.get(), &holder, HoldPool, WorkDone));
  ursa_loop *loop = nullptr;
  ASSERT_EQ(0, ursa_loop_new(&loop, nullptr));
  Answer a;
  ASSERT_EQ(0, ursa_resolve(loop, &a.req, "localhost", "7", AF_INET,
                            OnResolved));
  EXPECT_EQ(0, ursa_resolve_cancel(&a.req));
  for (int i = 0; i < 100 && ursa_loop_run(loop, URSA_RUN_ONCE) > 0; i++) {
  }
  EXPECT_EQ(1, a.calls);
  EXPECT_EQ(-ECANCELED, a.status);
  EXPECT_EQ(0u, ursa_loop_alive(loop));
  EXPECT_EQ(0, ursa_loop_close(loop)) << ursa_error_detail();
  hold_pool = false;
  ASSERT_TRUE(busy.RunUntil([&] { return held == 0; }));
  // The pool is free again: a new lookup on a new loop is answered.
  t::Loop next;
  Answer b;
  ASSERT_EQ(0, ursa_resolve(next.get(), &b.req, "localhost", "8", AF_INET,
                            OnResolved));
  ASSERT_TRUE(next.RunUntil([&] { return b.calls > 0; }));
  EXPECT_TRUE(Has(b.addrs, "127.0.0.1:8")) << b.detail;
  EXPECT_EQ(0, ursa_work_pool_size(4));
  next.Finish();
  busy.Finish();
}

// A child after fork() has none of the pool's threads: its lookups start
// threads of its own instead of waiting for ones that are not there.
TEST(ResolveFork, AChildResolvesWithAPoolOfItsOwn) {
  SKIP_FORK_UNDER_TSAN();
  t::Loop lp;
  Answer a;
  ASSERT_EQ(0, ursa_resolve(lp.get(), &a.req, "localhost", "1", AF_INET,
                            OnResolved));
  ASSERT_TRUE(lp.RunUntil([&] { return a.calls > 0; }));
  ASSERT_GE(LookupThreads(), 1);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(10);
    ursa_loop *loop;
    if (ursa_loop_new(&loop, nullptr) != 0) _exit(3);
    Answer b;
    if (ursa_resolve(loop, &b.req, "localhost", "2", AF_INET, OnResolved))
      _exit(4);
    while (!b.calls && ursa_loop_run(loop, URSA_RUN_ONCE) >= 0) {
    }
    _exit(b.status == 0 && Has(b.addrs, "127.0.0.1:2") ? 0 : 5);
  }
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
      << "child: " << (WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
}

TEST_P(Resolve, BadArgumentsAreRefused) {
  Answer a;
  EXPECT_EQ(-EINVAL, ursa_resolve(loop(), &a.req, "", NULL, AF_UNSPEC,
                                  OnResolved));
  EXPECT_EQ(-EINVAL, ursa_resolve(loop(), &a.req, nullptr, NULL, AF_UNSPEC,
                                  OnResolved));
  EXPECT_EQ(-EINVAL, ursa_resolve(loop(), &a.req, "localhost", NULL, AF_UNIX,
                                  OnResolved));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "family"));
  std::string long_name(300, 'a');
  EXPECT_EQ(-EINVAL, ursa_resolve(loop(), &a.req, long_name.c_str(), NULL,
                                  AF_UNSPEC, OnResolved));
  EXPECT_EQ(0, a.calls);
}

// A temporary failure is told apart: a child in a mount namespace of its
// own puts an unreachable name server (TEST-NET-1) in /etc/resolv.conf, and
// both ursa_resolve() and ursa_addr_parse() say -EAGAIN, not "no such
// name".  Skipped where namespaces are not allowed.
int TemporaryFailureChild() {
  if (unshare(CLONE_NEWNS) != 0) return 10;
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return 10;
  char path[] = "/tmp/ursa-resolv-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 11;
  const char conf[] = "nameserver 192.0.2.1\noptions timeout:1 attempts:1\n";
  if (write(fd, conf, sizeof(conf) - 1) != (ssize_t)(sizeof(conf) - 1))
    return 11;
  close(fd);
  int m = mount(path, "/etc/resolv.conf", nullptr, MS_BIND, nullptr);
  unlink(path);
  if (m != 0) return 10;
  ursa_loop *loop = nullptr;
  if (ursa_loop_new(&loop, nullptr) != 0) return 12;
  Answer a;
  if (ursa_resolve(loop, &a.req, "example.com", "80", AF_UNSPEC,
                   OnResolved) != 0)
    return 13;
  for (int i = 0; i < 200 && !a.calls; i++) ursa_loop_run(loop, URSA_RUN_ONCE);
  if (a.status != -EAGAIN) {
    fprintf(stderr, "resolve: %s (%s)\n", ursa_err_name(a.status),
            a.detail.c_str());
    return 14;
  }
  ursa_addr out;
  int r = ursa_addr_parse("example.com:80", &out);
  if (r != -EAGAIN || !strstr(ursa_error_detail(), "temporary")) {
    fprintf(stderr, "parse: %s (%s)\n", ursa_err_name(r), ursa_error_detail());
    return 15;
  }
  return ursa_loop_close(loop) == 0 ? 0 : 16;
}

TEST(ResolveFailure, ATemporaryFailureIsEAGAIN) {
  SKIP_FORK_UNDER_TSAN();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(TemporaryFailureChild());
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  ASSERT_TRUE(WIFEXITED(st));
  if (WEXITSTATUS(st) == 10) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(0, WEXITSTATUS(st)) << "child step " << WEXITSTATUS(st);
}

INSTANTIATE_TEST_SUITE_P(Rings, Resolve,
                         ::testing::ValuesIn(t::kVariants,
                                             t::kVariants + t::kNumVariants),
                         t::VariantName);

}  // namespace

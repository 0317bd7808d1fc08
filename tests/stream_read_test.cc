// stream_read_test.cc - receiving on TCP streams under every ring variant
// (stream_read.c and the buffer ring): echoes byte for byte, a small ring,
// read timeouts, kept buffers, buffers filled by parts, bundles, batched
// waits, read stop and start, and the read marks that bound a peer that
// does not read.
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

#include "tests/stream_util.h"

namespace {

using namespace st;

TEST_P(Stream, EchoesRandomPayloadsByteForByte) {
  t::EchoServer srv(loop(), family());
  const size_t sizes[] = {1, 7, 100, 4096, 65536, 1 << 20, 8 << 20};
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  uint32_t seed = 1;
  for (size_t n : sizes)
    clients.emplace_back(new t::EchoClient(loop(), srv.addr(), srv.addrlen(),
                                           t::RandomBytes(n, seed++)));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) {
    EXPECT_EQ(0, c->connect_status);
    EXPECT_EQ(0, c->read_status);
    EXPECT_EQ(0, c->write_status);
    EXPECT_TRUE(t::SameBytes(c->payload, c->got)) << c->payload.size();
  }
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

TEST_P(Stream, SmallBufferRingDeliversEveryByteInOrder) {
  loop_->Finish();
  opts_.buf_count = 2;
  opts_.buf_size = 64;
  Make();
  t::EchoServer srv(loop(), family());
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  for (int i = 0; i < 8; i++)
    clients.emplace_back(new t::EchoClient(loop(), srv.addr(), srv.addrlen(),
                                           t::RandomBytes(256 << 10, 900 + i),
                                           4096));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) EXPECT_TRUE(t::SameBytes(c->payload, c->got));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  EXPECT_GT(st.enobufs, 0u) << "the ring was never exhausted";
  EXPECT_EQ(0, srv.read_errors);
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

TEST_P(Stream, ReadTimeoutFiresOnSilentPeer) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  ASSERT_EQ(0, ursa_read_timeout(&a.s, 150));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  // Bytes at 50 ms push the deadline on.
  usleep(50 * 1000);
  ASSERT_TRUE(t::WriteAll(p.fd_, "hi", 2));
  uint64_t t0 = ursa_loop_now(loop());
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }, 5000));
  uint64_t waited = ursa_loop_now(loop()) - t0;
  EXPECT_EQ(-ETIMEDOUT, a.read_status) << ursa_err_name(a.read_status);
  EXPECT_EQ(2u, a.got.size());
  EXPECT_GE(waited, 100u);
  EXPECT_LT(waited, 3000u);
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// A stop and a start in the same turn leave the first timer's cancel in
// flight; the timeout must still end the read of a silent peer.
TEST_P(Stream, ReadTimeoutSurvivesStopAndStart) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  ASSERT_EQ(0, ursa_read_timeout(&a.s, 100));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT) < 0);
  ASSERT_EQ(0, ursa_read_stop(&a.s));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }, 5000));
  EXPECT_EQ(-ETIMEDOUT, a.read_status) << ursa_err_name(a.read_status);
  // Again with the timer's cancelled callback run in between.
  a.read_status = 0;
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_EQ(0, ursa_read_stop(&a.s));
  ASSERT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT) < 0);
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }, 5000));
  EXPECT_EQ(-ETIMEDOUT, a.read_status) << ursa_err_name(a.read_status);
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

TEST_P(Stream, KeptBuffersEchoWithoutACopy) {
  loop_->Finish();
  opts_.buf_count = 16;
  opts_.buf_size = 4096;
  opts_.buf_keep_max = 4;
  Make();
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  // Outside a callback, and for memory that is not a ring buffer.
  char stack[8];
  EXPECT_EQ(-EINVAL, ursa_buf_keep(loop(), stack));
  EXPECT_EQ(-EINVAL, ursa_buf_release(loop(), stack));
  Keeper k;
  k.s = &a.s;
  a.s.data = &k;
  ASSERT_EQ(0, ursa_read_start(&a.s, EchoKept));
  std::vector<char> msg = t::RandomBytes(2 << 20, 51);
  std::vector<char> back;
  std::thread peer([&] {
    std::thread w([&] { t::WriteAll(p.fd_, msg.data(), msg.size()); });
    char buf[65536];
    while (back.size() < msg.size()) {
      ssize_t n = recv(p.fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      back.insert(back.end(), buf, buf + n);
    }
    w.join();
  });
  // Until every byte was echoed and every write is done (the peer's side
  // is checked after it joins).
  bool ok = RunUntil([&] {
    return k.echoed >= msg.size() && k.outstanding == 0;
  });
  if (!ok) shutdown(p.fd_, SHUT_RDWR);  // unblock the peer thread
  peer.join();
  ASSERT_TRUE(ok) << "kept " << k.kept << " copied " << k.copied
                  << " outstanding " << k.outstanding << " back "
                  << back.size();
  EXPECT_TRUE(t::SameBytes(msg, back));
  EXPECT_GT(k.kept, 0);
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  EXPECT_EQ(0u, st.bufs_out) << "a kept buffer never went back";
  ASSERT_EQ(0, ursa_stream_close(&a.s, [](ursa_handle *h) {
              static_cast<Keeper *>(h->data)->closed = true;
            }));
  ASSERT_TRUE(RunUntil([&] { return k.closed; }));
  printf("kept %d, copied %d (keep limit reached %d times)\n", k.kept,
         k.copied, k.refused);
}

// Small reads each take a buffer of their own, unless the kernel fills
// buffers by parts (buf_inc): then they follow each other in one buffer.
// A kept slice stays intact while later bytes land in the same buffer, and
// the buffer goes back only when the kernel is done with it and the slice
// is released.
TEST_P(Stream, SmallReadsShareABufferFilledByParts) {
  loop_->Finish();
  opts_.buf_count = 8;
  opts_.buf_size = 1024;
  Make();
  bool by_parts = Uses(loop(), URSA_FEAT_BUF_INC);
  EXPECT_EQ((std::get<0>(GetParam()).enable & URSA_FEAT_BUF_INC) != 0,
            by_parts) << "the kernel here (6.12 and later) offers buf_inc";
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  Slices r;
  r.s = &a.s;
  r.keep = 1;
  a.s.data = &r;
  ASSERT_EQ(0, ursa_read_start(&a.s, RecordSlices));
  std::vector<char> msg = t::RandomBytes(12 * 200, 61);
  // One 200-byte message at a time, each read before the next is sent, so
  // that every read is one small completion: 2400 bytes fill 2.3 buffers.
  for (size_t i = 0; i < 12; i++) {
    ASSERT_TRUE(t::WriteAll(p.fd_, msg.data() + i * 200, 200));
    ASSERT_TRUE(RunUntil([&] { return r.got.size() == (i + 1) * 200; }));
  }
  EXPECT_TRUE(t::SameBytes(msg, r.got));
  // By parts, the messages at 1000 and 2000 are cut at the buffer ends.
  ASSERT_EQ(by_parts ? 14u : 12u, r.at.size());
  // Buffers are 1 KiB and 1 KiB-aligned: a read that starts one starts
  // at a multiple of 1024; any other continues the read before it.
  int starts = 0;
  for (size_t i = 0; i < r.at.size(); i++) {
    if ((uintptr_t)r.at[i] % 1024 == 0)
      starts++;
    else
      EXPECT_EQ(r.at[i - 1] + r.len[i - 1], r.at[i]) << "read " << i;
  }
  EXPECT_EQ(by_parts ? 3 : 12, starts)
      << (by_parts ? "reads should share buffers" : "one buffer per read");
  // The kept first slice: its bytes unchanged by what came after.
  ASSERT_NE(nullptr, r.kept);
  EXPECT_EQ(0, memcmp(r.kept, r.kept_copy.data(), r.kept_copy.size()));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  // Whole buffers: the kept one.  By parts: its buffer, full and done.
  EXPECT_EQ(1u, st.bufs_out);
  ASSERT_EQ(0, ursa_buf_release(loop(), r.kept));
  EXPECT_EQ(-EINVAL, ursa_buf_release(loop(), r.kept)) << "released twice";
  ursa_loop_stats(loop(), &st);
  EXPECT_EQ(0u, st.bufs_out);
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  a.s.data = &a;
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// Bytes already queued on the socket come in one bundle that fills several
// buffers: the read callback then runs once per buffer for one completion.
TEST_P(Stream, BundleFillsSeveralBuffersAtOnce) {
  loop_->Finish();
  opts_.buf_count = 64;
  opts_.buf_size = 1024;
  Make();
  bool bundles = Uses(loop(), URSA_FEAT_RECV_BUNDLE);
  EXPECT_EQ((std::get<0>(GetParam()).enable & URSA_FEAT_RECV_BUNDLE) != 0,
            bundles) << "the kernel here (6.10 and later) offers bundles";
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  std::vector<char> msg = t::RandomBytes(32 << 10, 62);
  ASSERT_TRUE(t::WriteAll(p.fd_, msg.data(), msg.size()));
  usleep(20000); // let it all reach the receive queue
  Slices r;
  a.s.data = &r;
  ursa_stats before, after;
  ursa_loop_stats(loop(), &before);
  ASSERT_EQ(0, ursa_read_start(&a.s, RecordSlices));
  ASSERT_TRUE(RunUntil([&] { return r.got.size() == msg.size(); }));
  ursa_loop_stats(loop(), &after);
  EXPECT_TRUE(t::SameBytes(msg, r.got));
  uint64_t cqes = after.cqes - before.cqes;
  if (bundles)
    EXPECT_LT(cqes * 4, r.at.size())
        << cqes << " completions for " << r.at.size() << " slices";
  else
    EXPECT_GE(cqes, r.at.size()) << "one completion per buffer";
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  a.s.data = &a;
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// Every ring variant waits for batches (min-wait) as its policy decides:
// 16 streams echoing to 16 clients on the same loop are 33 handles, enough
// for the default (URSA_BATCH_AUTO) to batch, and batched_always batches
// every wait.  Every byte comes back, and the counter shows the batched
// path was taken; epoll has no batched waits.
TEST_P(Stream, BatchedWaitsKeepEveryByte) {
  bool batched = Uses(loop(), URSA_FEAT_MIN_WAIT);
  EXPECT_EQ(std::get<0>(GetParam()).backend != URSA_BACKEND_EPOLL, batched)
      << "the kernel here (6.12 and later) has min-wait";
  t::EchoServer srv(loop(), family());
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  for (int i = 0; i < 16; i++)
    clients.emplace_back(new t::EchoClient(
        loop(), srv.addr(), srv.addrlen(),
        t::RandomBytes(64 << 10, 900 + (uint32_t)i), 512));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) EXPECT_TRUE(t::SameBytes(c->payload, c->got));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  if (batched) {
    EXPECT_GT(st.batch_waits, 0u);
  } else {
    EXPECT_EQ(0u, st.batch_waits);
  }
  EXPECT_LE(st.batch_short, st.batch_waits);
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

TEST_P(Stream, ReadStopAndStartLoseNothing) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  std::vector<char> msg = t::RandomBytes(200000, 9);
  std::thread writer([&] { t::WriteAll(p.fd_, msg.data(), msg.size()); });
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  for (int i = 0; i < 50 && a.got.size() < msg.size(); i++) {
    ursa_loop_run(loop(), URSA_RUN_ONCE);
    ASSERT_EQ(0, ursa_read_stop(&a.s));
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
    ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  }
  ASSERT_TRUE(RunUntil([&] { return a.got.size() >= msg.size(); }));
  writer.join();
  EXPECT_TRUE(t::SameBytes(msg, a.got));
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// A peer that sends and does not read cannot make the stream hold more
// than the high watermark plus what the kernel had already received into
// ring buffers when the pause took effect (here 8 x 16 KiB); once it reads,
// every byte arrives.
TEST_P(Watermarks, PeerThatDoesNotReadIsBounded) {
  EXPECT_EQ(-EINVAL, ursa_stream_read_marks(&b_.s, 1000, 1000));
  const size_t high = 256 << 10, low = 64 << 10;
  Start(high, low);
  std::vector<char> msg = t::RandomBytes(16 << 20, 77);
  size_t off = 0;
  // Push without reading anything back until the mark is reached, then
  // 300 ms more to see the queue stop growing (10 s at most: sanitizers are
  // slow).
  uint64_t cap = Now() + 10000, until = cap;
  while (Now() < until && off < msg.size()) {
    if (b_.max_queued >= high && until == cap) until = Now() + 300;
    ssize_t w = send(peer_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (w > 0) off += (size_t)w;
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  }
  EXPECT_LE(b_.max_queued, high + 8 * 16384 + 16384)
      << "queue grew past the mark and the ring";
  EXPECT_GE(b_.max_queued, high) << "the mark was never reached";
  EXPECT_LT(off, msg.size()) << "the peer was never held back";
  // Now read everything: the rest flows and arrives whole.
  std::vector<char> got;
  char buf[65536];
  while (got.size() < msg.size()) {
    ssize_t w = off < msg.size() ? send(peer_, msg.data() + off,
                                        msg.size() - off, MSG_NOSIGNAL)
                                 : 0;
    if (w > 0) off += (size_t)w;
    ssize_t r = recv(peer_, buf, sizeof(buf), 0);
    if (r > 0) got.insert(got.end(), buf, buf + r);
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  }
  EXPECT_TRUE(t::SameBytes(msg, got));
}

// A peer that fills the high watermark and then neither sends nor reads
// is the stall the read timeout is for: the read ends with -ETIMEDOUT
// although no recv is in flight while reading is paused.
TEST_P(Watermarks, ReadTimeoutEndsAPausedStall) {
  Start(64 << 10, 16 << 10, 200);
  std::vector<char> msg = t::RandomBytes(16 << 20, 78);
  size_t off = 0;
  // Push until the kernel's buffers are full too and reading stays paused
  // (queue above the low mark, 100 ms of sends refused), 10 s at most.
  uint64_t cap = Now() + 10000, last_sent = 0;
  while (Now() < cap) {
    ssize_t w = send(peer_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
      last_sent = Now();
    } else if (b_.max_queued >= (64u << 10) &&
               ursa_write_queue_size(&b_.s) > (16u << 10) &&
               Now() - last_sent >= 100) {
      break;
    }
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  }
  ASSERT_GT(ursa_write_queue_size(&b_.s), 16u << 10)
      << "reading never stayed paused";
  uint64_t t0 = Now();
  ASSERT_TRUE(lp_->RunUntil([&] { return b_.ended != 0; }, 5000))
      << "a paused stall never timed out";
  uint64_t waited = Now() - t0;
  EXPECT_EQ(-ETIMEDOUT, b_.ended) << ursa_err_name((int)b_.ended);
  // The stream's last progress came at about the peer's last send (the
  // queues fill within milliseconds), so the 200 ms timer cannot have run
  // out much before 200 ms after it.
  EXPECT_GE(Now() - last_sent, 150u);
  EXPECT_LT(waited, 3000u);
}

// The same stall, but the peer drains its replies slowly: each send that
// gets through is progress, so the read timeout does not fire.
TEST_P(Watermarks, DrainingPeerIsNotTimedOut) {
  // 800 ms: a CI machine running other suites beside this one was seen
  // to leave this process without the CPU for 300 ms (the timeout fired
  // on the epoll backend once, in a fresh-clone CI run).
  Start(64 << 10, 16 << 10, 800);
  std::vector<char> msg = t::RandomBytes(4 << 20, 79);
  size_t off = 0;
  std::vector<char> got;
  static char buf[65536];
  uint64_t end = Now() + 2500;
  // Send freely, read 64 KiB every 50 ms: slower than the sender, but one
  // send (at most a batch of 8 x 16 KiB) still completes well inside the
  // 800 ms the timeout allows.
  uint64_t next_read = 0;
  while (Now() < end) {
    ssize_t w = send(peer_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (w > 0) off += (size_t)w;
    if (Now() >= next_read) {
      ssize_t r = recv(peer_, buf, sizeof(buf), MSG_DONTWAIT);
      if (r > 0) got.insert(got.end(), buf, buf + r);
      next_read = Now() + 50;
    }
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
    usleep(1000);
  }
  EXPECT_EQ(0, b_.ended) << ursa_err_name((int)b_.ended);
  EXPECT_GE(b_.max_queued, 64u << 10) << "reading was never paused";
  EXPECT_TRUE(std::equal(got.begin(), got.end(), msg.begin()))
      << "replies arrived out of order or changed";
}

INSTANTIATE_TEST_SUITE_P(
    Rings, Stream,
    ::testing::Combine(::testing::ValuesIn(t::kVariants,
                                           t::kVariants + t::kNumVariants),
                       ::testing::Values(AF_INET, AF_INET6)),
    ParamName);
ON_EACH_BACKEND(Watermarks);

}  // namespace

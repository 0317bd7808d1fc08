// tls_test.cc - TLS over ursa streams: handshakes and byte-exact echoes of
// 1 B to 8 MiB both ways on TLS 1.2 and 1.3 and both backends, ALPN, the
// client's refusals (unknown CA, wrong host name) with their reasons, a
// peer that sends garbage, one that stops mid-handshake, one that never
// finishes it, an abrupt close without close_notify, and interop with
// openssl s_server and s_client.
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil.h"
#include "ursa/tls.h"

namespace {

std::string CertDir() {
  static std::string dir;
  if (dir.empty()) {
    const char *tmp = getenv("TEST_TMPDIR");
    dir = std::string(tmp ? tmp : "/tmp") + "/ursa-tls-certs";
    std::string cmd = "bash tools/make_test_certs.sh " + dir + " >/dev/null";
    if (system(cmd.c_str()) != 0) dir.clear();
  }
  return dir;
}
std::string Cert(const char *name) { return CertDir() + "/" + name; }

struct Param {
  ursa_backend backend;
  int version;
};
std::string ParamName(const ::testing::TestParamInfo<Param> &i) {
  return std::string(i.param.backend == URSA_BACKEND_EPOLL ? "epoll"
                                                           : "uring") +
         (i.param.version == URSA_TLS_1_3 ? "_tls13" : "_tls12");
}

// One TLS connection's side: handshake, plaintext in, writes out.
struct Side {
  ursa_stream s{};
  ursa_tls t{};
  int hs = 1;            // handshake status (1: not yet)
  std::string hs_detail;
  std::vector<char> got;
  ssize_t read_end = 0;  // URSA_EOF, -ECONNABORTED, ...
  std::string read_detail;
  bool closed = false;
  bool echo = false;     // write back what comes (the server)
  bool shut_on_eof = false;
  int write_errors = 0;
  int writes_done = 0;
};

struct Wr {
  ursa_tls_write_req w{};
  std::vector<char> buf;
};

void OnWritten(ursa_tls_write_req *w, int status) {
  Wr *wr = static_cast<Wr *>(w->data);
  Side *side = static_cast<Side *>(wr->w.tls->data);
  if (status) side->write_errors++;
  side->writes_done++;
  delete wr;
}

void Write(Side *side, const char *p, size_t n) {
  Wr *wr = new Wr;
  wr->buf.assign(p, p + n);
  wr->w.data = wr;
  int r = ursa_tls_write(&wr->w, &side->t, wr->buf.data(), n, OnWritten);
  if (r) {
    side->write_errors++;
    delete wr;
  }
}

void OnRead(ursa_tls *t, ssize_t n, const void *buf) {
  Side *side = static_cast<Side *>(t->data);
  if (n < 0) {
    side->read_end = n;
    side->read_detail = ursa_tls_error_detail();
    if (side->shut_on_eof && n == URSA_EOF) ursa_tls_shutdown(t, nullptr);
    return;
  }
  side->got.insert(side->got.end(), (const char *)buf,
                   (const char *)buf + n);
  // Echo in the same sizes, straight from the callback's buffer (the
  // write copies it into records before it returns).
  if (side->echo) {
    Wr *wr = new Wr;
    wr->w.data = wr;
    if (ursa_tls_write(&wr->w, t, buf, (size_t)n, OnWritten)) {
      side->write_errors++;
      delete wr;
    }
  }
}

void OnHandshake(ursa_tls *t, int status) {
  Side *side = static_cast<Side *>(t->data);
  side->hs = status;
  if (status < 0) {
    side->hs_detail = ursa_tls_error_detail();
    return;
  }
  EXPECT_EQ(0, ursa_tls_read_start(t, OnRead));
}

void OnTlsClosed(ursa_tls *t) { static_cast<Side *>(t->data)->closed = true; }

class Tls : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(CertDir().empty()) << "make_test_certs.sh failed";
    ursa_loop_options o = t::OptionsFor(GetParam().backend);
    lp_.reset(new t::Loop(&o));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override {
    if (sctx_) ursa_tls_ctx_free(sctx_);
    if (cctx_) ursa_tls_ctx_free(cctx_);
    if (listening_) {
      bool done = false;
      l_.data = &done;
      ursa_listener_close(
          &l_, [](ursa_handle *h) { *static_cast<bool *>(h->data) = true; });
      lp_->RunUntil([&] { return done; });
    }
    lp_->Finish();
  }
  ursa_loop *loop() { return lp_->get(); }
  bool RunUntil(const std::function<bool()> &f, int ms = 20000) {
    return lp_->RunUntil(f, ms);
  }

  // A TLS server on 127.0.0.1: each connection becomes side `server`.
  void Serve(const char *cert, const char *key, const char *alpn = nullptr,
             uint32_t hs_ms = 0, bool verify_client = false) {
    ursa_tls_options o{};
    std::string c = Cert(cert), k = Cert(key), ca = Cert("ca.pem");
    o.cert_file = c.c_str();
    o.key_file = k.c_str();
    if (verify_client) {
      o.verify_client = 1;
      o.ca_file = ca.c_str();
    }
    o.min_version = o.max_version = GetParam().version;
    o.alpn = alpn;
    o.handshake_timeout_ms = hs_ms;
    ASSERT_EQ(0, ursa_tls_ctx_new(&sctx_, 1, &o)) << ursa_tls_error_detail();
    sockaddr_storage ss;
    socklen_t len = t::LoopbackAddr(AF_INET, &ss);
    l_.data = this;
    ASSERT_EQ(0, ursa_listen(loop(), &l_, (sockaddr *)&ss, len, 0, 0,
                             [](ursa_listener *l, int status) {
                               Tls *self = static_cast<Tls *>(l->data);
                               if (status < 0 || self->server_.s.loop) return;
                               Side *sv = &self->server_;
                               ASSERT_EQ(0, ursa_accept(l, &sv->s));
                               sv->t.data = sv;
                               ASSERT_EQ(0, ursa_tls_start(&sv->t,
                                                           self->sctx_, &sv->s,
                                                           nullptr,
                                                           OnHandshake));
                             }));
    listening_ = true;
    ASSERT_EQ(0, ursa_listener_addr(&l_, &addr_, &addrlen_));
    server_.echo = true;
    server_.shut_on_eof = true;
  }

  // A client to addr_ as side `client`, trusting ca (NULL: insecure).
  void Connect(const char *ca, const char *name, const char *alpn = nullptr,
               const char *own = nullptr) {
    ursa_tls_options o{};
    std::string c = ca ? Cert(ca) : "";
    std::string oc = own ? Cert((std::string(own) + ".pem").c_str()) : "";
    std::string ok = own ? Cert((std::string(own) + ".key").c_str()) : "";
    if (own) {
      o.cert_file = oc.c_str();
      o.key_file = ok.c_str();
    }
    o.ca_file = ca ? c.c_str() : nullptr;
    o.no_verify = ca == nullptr;
    o.min_version = o.max_version = GetParam().version;
    o.alpn = alpn;
    ASSERT_EQ(0, ursa_tls_ctx_new(&cctx_, 0, &o)) << ursa_tls_error_detail();
    name_ = name ? name : "";
    has_name_ = name != nullptr;
    client_.t.data = &client_;
    client_.s.data = this;
    ASSERT_EQ(0, ursa_connect(loop(), &client_.s, (sockaddr *)&addr_,
                              addrlen_, 0, 5000, [](ursa_stream *s, int st) {
                                Tls *self = static_cast<Tls *>(s->data);
                                ASSERT_EQ(0, st);
                                ASSERT_EQ(0, ursa_tls_start(
                                                 &self->client_.t, self->cctx_,
                                                 s,
                                                 self->has_name_
                                                     ? self->name_.c_str()
                                                     : nullptr,
                                                 OnHandshake));
                              }));
  }

  void CloseBoth() {
    if (client_.t.p) ursa_tls_close(&client_.t, OnTlsClosed);
    else client_.closed = true;
    if (server_.t.p) ursa_tls_close(&server_.t, OnTlsClosed);
    else server_.closed = true;
    EXPECT_TRUE(RunUntil([&] { return client_.closed && server_.closed; }));
  }

  std::unique_ptr<t::Loop> lp_;
  ursa_tls_ctx *sctx_ = nullptr, *cctx_ = nullptr;
  ursa_listener l_{};
  bool listening_ = false;
  sockaddr_storage addr_{};
  socklen_t addrlen_ = 0;
  Side server_, client_;
  std::string name_;
  bool has_name_ = false;
};

TEST_P(Tls, EchoesEverySizeByteExactAndEndsWithCloseNotify) {
  Serve("server.pem", "server.key", "h2,http/1.1");
  Connect("ca.pem", "localhost", "http/1.1");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1 && server_.hs != 1; }));
  ASSERT_EQ(0, client_.hs) << client_.hs_detail;
  ASSERT_EQ(0, server_.hs) << server_.hs_detail;
  EXPECT_STREQ(GetParam().version == URSA_TLS_1_3 ? "TLSv1.3" : "TLSv1.2",
               ursa_tls_version(&client_.t));
  EXPECT_STREQ("http/1.1", ursa_tls_alpn(&client_.t));
  EXPECT_STREQ("http/1.1", ursa_tls_alpn(&server_.t));
  std::vector<char> all;
  size_t sizes[] = {1, 1000, 16384, 16385, 100000, 1 << 20, 8 << 20};
  uint32_t seed = 1;
  for (size_t n : sizes) {
    std::vector<char> d = t::RandomBytes(n, seed++);
    Write(&client_, d.data(), d.size());
    all.insert(all.end(), d.begin(), d.end());
  }
  ASSERT_TRUE(RunUntil([&] { return client_.got.size() >= all.size(); }));
  EXPECT_TRUE(t::SameBytes(all, server_.got));
  EXPECT_TRUE(t::SameBytes(all, client_.got));
  // close_notify both ways: each side reads a clean end.
  ASSERT_EQ(0, ursa_tls_shutdown(&client_.t, nullptr));
  ursa_tls_write_req late{};
  EXPECT_EQ(-EPIPE, ursa_tls_write(&late, &client_.t, "x", 1, OnWritten));
  ASSERT_TRUE(RunUntil([&] { return client_.read_end != 0; }));
  EXPECT_EQ(URSA_EOF, server_.read_end) << server_.read_detail;
  EXPECT_EQ(URSA_EOF, client_.read_end) << client_.read_detail;
  EXPECT_EQ(0, client_.write_errors);
  EXPECT_EQ(0, server_.write_errors);
  CloseBoth();
}

TEST_P(Tls, AClientRefusesAnUnknownCAAndSaysSo) {
  Serve("stranger.pem", "stranger.key");
  Connect("ca.pem", "localhost");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1; }));
  EXPECT_EQ(-EKEYREJECTED, client_.hs);
  EXPECT_NE(std::string::npos, client_.hs_detail.find("unknown CA"))
      << client_.hs_detail;
  RunUntil([&] { return server_.hs != 1; }, 5000);
  EXPECT_LT(server_.hs, 0) << "the server sees the client's alert";
  CloseBoth();
}

TEST_P(Tls, AClientRefusesTheWrongHostNameAndSaysSo) {
  Serve("wrong.pem", "wrong.key");
  Connect("ca.pem", "localhost");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1; }));
  EXPECT_EQ(-EKEYREJECTED, client_.hs);
  EXPECT_NE(std::string::npos, client_.hs_detail.find("host name mismatch"))
      << client_.hs_detail;
  CloseBoth();
}

TEST_P(Tls, AServerThatVerifiesClientsWantsTheirCertificate) {
  Serve("server.pem", "server.key", nullptr, 0, true);
  Connect("ca.pem", "localhost", nullptr, "client");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1 && server_.hs != 1; }));
  EXPECT_EQ(0, server_.hs) << server_.hs_detail;
  EXPECT_EQ(0, client_.hs) << client_.hs_detail;
  Write(&client_, "with papers", 11);
  ASSERT_TRUE(RunUntil([&] { return client_.got.size() >= 11; }));
  CloseBoth();
}

TEST_P(Tls, AServerThatVerifiesClientsRefusesOneWithout) {
  Serve("server.pem", "server.key", nullptr, 0, true);
  Connect("ca.pem", "localhost");
  ASSERT_TRUE(RunUntil([&] { return server_.hs != 1; }));
  EXPECT_LT(server_.hs, 0);
  EXPECT_NE(std::string::npos, server_.hs_detail.find("certificate"))
      << server_.hs_detail;
  RunUntil([&] { return client_.hs != 1 || client_.read_end != 0; }, 5000);
  CloseBoth();
}

TEST_P(Tls, InsecureClientsTakeAnyCertificate) {
  Serve("stranger.pem", "stranger.key");
  Connect(nullptr, nullptr);
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1 && server_.hs != 1; }));
  EXPECT_EQ(0, client_.hs) << client_.hs_detail;
  Write(&client_, "ping", 4);
  ASSERT_TRUE(RunUntil([&] { return client_.got.size() >= 4; }));
  EXPECT_EQ("ping", std::string(client_.got.begin(), client_.got.end()));
  CloseBoth();
}

// A plain socket plays the misbehaving peer.
int RawConnect(const sockaddr_storage &ss, socklen_t len) {
  return t::BlockingConnect(ss, len);
}

TEST_P(Tls, GarbageFromThePeerIsAProtocolError) {
  Serve("server.pem", "server.key");
  int fd = RawConnect(addr_, addrlen_);
  ASSERT_GE(fd, 0);
  const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(t::WriteAll(fd, junk, sizeof(junk) - 1));
  ASSERT_TRUE(RunUntil([&] { return server_.hs != 1; }));
  EXPECT_EQ(-EPROTO, server_.hs);
  EXPECT_NE(std::string::npos, server_.hs_detail.find("does not speak TLS"))
      << server_.hs_detail;
  close(fd);
  CloseBoth();
}

TEST_P(Tls, APeerThatStopsMidHandshakeIsReported) {
  Serve("server.pem", "server.key");
  int fd = RawConnect(addr_, addrlen_);
  ASSERT_GE(fd, 0);
  // The first bytes of a TLS record header, then the peer goes.
  const unsigned char part[] = {0x16, 0x03, 0x01, 0x00};
  ASSERT_TRUE(t::WriteAll(fd, part, sizeof(part)));
  close(fd);
  ASSERT_TRUE(RunUntil([&] { return server_.hs != 1; }));
  EXPECT_EQ(-ECONNRESET, server_.hs);
  EXPECT_NE(std::string::npos,
            server_.hs_detail.find("before the handshake finished"))
      << server_.hs_detail;
  CloseBoth();
}

TEST_P(Tls, AHandshakeThatNeverFinishesTimesOut) {
  Serve("server.pem", "server.key", nullptr, 200);
  int fd = RawConnect(addr_, addrlen_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(RunUntil([&] { return server_.hs != 1; }));
  EXPECT_EQ(-ETIMEDOUT, server_.hs);
  close(fd);
  CloseBoth();
}

TEST_P(Tls, AnAbruptCloseWithoutCloseNotifyIsReportedAsSuch) {
  Serve("server.pem", "server.key");
  Connect("ca.pem", "localhost");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1 && server_.hs != 1; }));
  ASSERT_EQ(0, client_.hs);
  Write(&client_, "last words", 10);
  ASSERT_TRUE(RunUntil([&] { return client_.got.size() >= 10; }));
  // The client closes its socket with no close_notify.
  ursa_tls_close(&client_.t, OnTlsClosed);
  ASSERT_TRUE(RunUntil([&] { return server_.read_end != 0; }));
  EXPECT_EQ(-ECONNABORTED, server_.read_end);
  EXPECT_NE(std::string::npos, server_.read_detail.find("close_notify"))
      << server_.read_detail;
  CloseBoth();
}

TEST_P(Tls, BadContextsAreRefusedByName) {
  ursa_tls_ctx *c = nullptr;
  ursa_tls_options o{};
  EXPECT_EQ(-EINVAL, ursa_tls_ctx_new(&c, 1, &o));
  EXPECT_NE(nullptr, strstr(ursa_tls_error_detail(), "certificate"));
  std::string missing = CertDir() + "/nope.pem";
  o.cert_file = missing.c_str();
  std::string key = Cert("server.key");
  o.key_file = key.c_str();
  EXPECT_EQ(-ENOENT, ursa_tls_ctx_new(&c, 1, &o));
  EXPECT_NE(nullptr, strstr(ursa_tls_error_detail(), "nope.pem"));
  std::string other = Cert("wrong.pem");
  o.cert_file = other.c_str();  // not the key's certificate
  EXPECT_EQ(-EKEYREJECTED, ursa_tls_ctx_new(&c, 1, &o));
  EXPECT_NE(nullptr, strstr(ursa_tls_error_detail(), "server.key"));
  ursa_tls_options v{};
  v.min_version = 0x0301;
  EXPECT_EQ(-EINVAL, ursa_tls_ctx_new(&c, 0, &v));
  v.min_version = 0;
  v.alpn = "h2,,x";
  EXPECT_EQ(-EINVAL, ursa_tls_ctx_new(&c, 0, &v));
  EXPECT_NE(nullptr, strstr(ursa_tls_error_detail(), "ALPN"));
  EXPECT_EQ(nullptr, c);
}

// ---- interop with implementations nobody here wrote ----

// openssl s_server -rev answers each line reversed.
TEST_P(Tls, TalksToOpensslSServer) {
  uint16_t port = 20000 + (getpid() % 20000);
  std::string cmd = "exec openssl s_server -quiet -rev -naccept 1 -accept " +
                    std::to_string(port) + " -cert " + Cert("server.pem") +
                    " -key " + Cert("server.key") +
                    (GetParam().version == URSA_TLS_1_3 ? " -tls1_3"
                                                        : " -tls1_2");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char *)nullptr);
    _exit(127);
  }
  addrlen_ = t::LoopbackAddr(AF_INET, &addr_, port);
  // Wait for it to listen.
  for (int i = 0; i < 100; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool up = connect(fd, (sockaddr *)&addr_, addrlen_) == 0;
    close(fd);
    if (up) break;
    usleep(50000);
  }
  // That probe used up -naccept 1 if it connected: start it again.
  waitpid(pid, nullptr, WNOHANG);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char *)nullptr);
    _exit(127);
  }
  usleep(300000);
  Connect("ca.pem", "localhost");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1; }));
  ASSERT_EQ(0, client_.hs) << client_.hs_detail;
  Write(&client_, "hello ursa\n", 11);
  ASSERT_TRUE(RunUntil([&] { return client_.got.size() >= 11; }));
  EXPECT_EQ("asru olleh\n",
            std::string(client_.got.begin(), client_.got.begin() + 11));
  ursa_tls_close(&client_.t, OnTlsClosed);
  EXPECT_TRUE(RunUntil([&] { return client_.closed; }));
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  server_.closed = true;
}

// openssl s_client sends a line to ursa's server and reads the echo.
TEST_P(Tls, ServesOpensslSClient) {
  Serve("server.pem", "server.key");
  std::string out = CertDir() + "/s_client.out";
  std::string cmd =
      "(printf 'echo me please\\n'; sleep 1) | timeout 10 openssl s_client "
      "-quiet -no_ign_eof "
      "-verify_return_error -CAfile " + Cert("ca.pem") +
      " -servername localhost -verify_hostname localhost -connect 127.0.0.1:" +
      std::to_string(t::PortOf(addr_)) +
      (GetParam().version == URSA_TLS_1_3 ? " -tls1_3" : " -tls1_2") +
      " > " + out + " 2>&1";
  std::thread th([&] { (void)!system(cmd.c_str()); });
  bool got = RunUntil([&] { return server_.got.size() >= 15; });
  // s_client ends when its input does: the server reads its end.
  RunUntil([&] { return server_.read_end != 0; }, 5000);
  th.join();
  ASSERT_TRUE(got);
  EXPECT_EQ("echo me please\n",
            std::string(server_.got.begin(), server_.got.end()));
  FILE *f = fopen(out.c_str(), "r");
  std::string text;
  if (f) {
    char b[4096];
    size_t n = fread(b, 1, sizeof(b), f);
    text.assign(b, n);
    fclose(f);
  }
  EXPECT_NE(std::string::npos, text.find("echo me please")) << text;
  CloseBoth();
}

// Python's ssl module (OpenSSL underneath, but not our code driving it).
std::string PyVersion(int v) {
  return v == URSA_TLS_1_3 ? "ssl.TLSVersion.TLSv1_3" : "ssl.TLSVersion.TLSv1_2";
}

TEST_P(Tls, ServesPythonsSslClient) {
  Serve("server.pem", "server.key");
  std::string py =
      "import socket, ssl, sys\n"
      "c = ssl.create_default_context(cafile='" + Cert("ca.pem") + "')\n"
      "c.minimum_version = c.maximum_version = " +
      PyVersion(GetParam().version) + "\n"
      "s = c.wrap_socket(socket.create_connection(('127.0.0.1', " +
      std::to_string(t::PortOf(addr_)) + ")), server_hostname='localhost')\n"
      "data = bytes(range(256)) * 1000\n"
      "s.sendall(data)\n"
      "got = b''\n"
      "while len(got) < len(data):\n"
      "    b = s.recv(65536)\n"
      "    if not b: break\n"
      "    got += b\n"
      "s.unwrap()\n"
      "sys.exit(0 if got == data else 3)\n";
  std::string path = CertDir() + "/client.py";
  FILE *f = fopen(path.c_str(), "w");
  ASSERT_NE(nullptr, f);
  fputs(py.c_str(), f);
  fclose(f);
  int rc = -1;
  std::thread th([&] {
    rc = system(("timeout 20 python3 " + path + " 2>" + path + ".err").c_str());
  });
  bool ended = RunUntil([&] { return server_.read_end != 0; });
  th.join();
  ASSERT_TRUE(ended);
  EXPECT_EQ(0, rc) << "the Python client saw a different echo";
  EXPECT_EQ(256000u, server_.got.size());
  EXPECT_EQ(URSA_EOF, server_.read_end) << "unwrap() sends close_notify: "
                                        << server_.read_detail;
  CloseBoth();
}

TEST_P(Tls, TalksToPythonsSslServer) {
  std::string portfile = CertDir() + "/py.port";
  unlink(portfile.c_str());
  std::string py =
      "import socket, ssl\n"
      "c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
      "c.minimum_version = c.maximum_version = " +
      PyVersion(GetParam().version) + "\n"
      "c.load_cert_chain('" + Cert("server.pem") + "', '" +
      Cert("server.key") + "')\n"
      "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n"
      "open('" + portfile + ".tmp', 'w').write(str(l.getsockname()[1]))\n"
      "import os; os.rename('" + portfile + ".tmp', '" + portfile + "')\n"
      "s = c.wrap_socket(l.accept()[0], server_side=True)\n"
      "while True:\n"
      "    b = s.recv(65536)\n"
      "    if not b: break\n"
      "    s.sendall(b.upper())\n"
      "s.unwrap()\n";
  std::string path = CertDir() + "/server.py";
  FILE *f = fopen(path.c_str(), "w");
  ASSERT_NE(nullptr, f);
  fputs(py.c_str(), f);
  fclose(f);
  std::thread th([&] {
    (void)!system(("timeout 20 python3 " + path + " 2>" + path + ".err").c_str());
  });
  int port = 0;
  for (int i = 0; i < 200 && !port; i++) {
    FILE *pf = fopen(portfile.c_str(), "r");
    if (pf) {
      if (fscanf(pf, "%d", &port) != 1) port = 0;
      fclose(pf);
    }
    if (!port) usleep(25000);
  }
  ASSERT_NE(0, port);
  addrlen_ = t::LoopbackAddr(AF_INET, &addr_, (uint16_t)port);
  Connect("ca.pem", "localhost");
  ASSERT_TRUE(RunUntil([&] { return client_.hs != 1; }));
  ASSERT_EQ(0, client_.hs) << client_.hs_detail;
  std::string msg(100000, 'q');
  Write(&client_, msg.data(), msg.size());
  ASSERT_TRUE(RunUntil([&] { return client_.got.size() >= msg.size(); }));
  EXPECT_EQ(std::string(100000, 'Q'),
            std::string(client_.got.begin(), client_.got.end()));
  ASSERT_EQ(0, ursa_tls_shutdown(&client_.t, nullptr));
  ASSERT_TRUE(RunUntil([&] { return client_.read_end != 0; }));
  EXPECT_EQ(URSA_EOF, client_.read_end) << client_.read_detail;
  th.join();
  ursa_tls_close(&client_.t, OnTlsClosed);
  EXPECT_TRUE(RunUntil([&] { return client_.closed; }));
  server_.closed = true;
}

const Param kParams[] = {{URSA_BACKEND_URING, URSA_TLS_1_3},
                         {URSA_BACKEND_URING, URSA_TLS_1_2},
                         {URSA_BACKEND_EPOLL, URSA_TLS_1_3},
                         {URSA_BACKEND_EPOLL, URSA_TLS_1_2}};
INSTANTIATE_TEST_SUITE_P(Versions, Tls, ::testing::ValuesIn(kParams),
                         ParamName);

TEST(Ktls, TheProbeSaysWhatTheKernelHas) {
  char why[200];
  int ok = ursa_tls_ktls(why, sizeof(why));
  printf("%s\n", why);
  EXPECT_NE(nullptr, strstr(why, "ktls:")) << why;
  // This machine's kernel is built without CONFIG_TLS.
  if (!ok) {
    EXPECT_NE(nullptr, strstr(why, "not available")) << why;
  }
}

}  // namespace

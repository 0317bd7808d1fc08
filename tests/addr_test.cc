// addr_test.cc - the address parser and formatter.
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/un.h>

#include <string>

#include "tests/testutil.h"

namespace {

std::string Format(const ursa_addr &a) {
  char buf[256];
  int n = ursa_addr_format((const sockaddr *)&a.ss, a.len, buf, sizeof(buf));
  EXPECT_GT(n, 0);
  return std::string(buf);
}

std::string RoundTrip(const char *text) {
  ursa_addr a;
  int r = ursa_addr_parse(text, &a);
  EXPECT_EQ(0, r) << text << ": " << ursa_error_detail();
  return r ? "" : Format(a);
}

TEST(Addr, ParsesIpv4) {
  ursa_addr a;
  ASSERT_EQ(0, ursa_addr_parse("127.0.0.1:7000", &a));
  ASSERT_EQ(AF_INET, a.ss.ss_family);
  EXPECT_EQ(sizeof(sockaddr_in), a.len);
  auto *in = (sockaddr_in *)&a.ss;
  EXPECT_EQ(htons(7000), in->sin_port);
  EXPECT_EQ(htonl(INADDR_LOOPBACK), in->sin_addr.s_addr);
  EXPECT_EQ("127.0.0.1:7000", RoundTrip("127.0.0.1:7000"));
  EXPECT_EQ("10.1.2.3:0", RoundTrip("10.1.2.3:0"));
  EXPECT_EQ("1.2.3.4:65535", RoundTrip("1.2.3.4:65535"));
}

TEST(Addr, ParsesIpv6WithBrackets) {
  EXPECT_EQ("[::1]:7000", RoundTrip("[::1]:7000"));
  EXPECT_EQ("[2001:db8::5]:80", RoundTrip("[2001:db8:0::5]:80"));
  EXPECT_EQ("[fe80::1%1]:9", RoundTrip("[fe80::1%1]:9"));
  EXPECT_EQ("[fe80::1%1]:9", RoundTrip("[fe80::1%lo]:9"));
  EXPECT_EQ("[fe80::1%4294967295]:9", RoundTrip("[fe80::1%4294967295]:9"));
}

TEST(Addr, AnyAddressIsDualStackOrIpv4) {
  ursa_addr a;
  ASSERT_EQ(0, ursa_addr_parse(":7000", &a));
  std::string s = Format(a);
  EXPECT_TRUE(s == "[::]:7000" || s == "0.0.0.0:7000") << s;
}

TEST(Addr, ResolvesLocalhostOnce) {
  ursa_addr a;
  ASSERT_EQ(0, ursa_addr_parse("localhost:7001", &a)) << ursa_error_detail();
  std::string s = Format(a);
  EXPECT_TRUE(s == "127.0.0.1:7001" || s == "[::1]:7001") << s;
}

TEST(Addr, ParsesUnixPathsAndAbstractNames) {
  ursa_addr a;
  ASSERT_EQ(0, ursa_addr_parse("unix:/tmp/x.sock", &a));
  ASSERT_EQ(AF_UNIX, a.ss.ss_family);
  EXPECT_STREQ("/tmp/x.sock", ((sockaddr_un *)&a.ss)->sun_path);
  EXPECT_EQ("unix:/tmp/x.sock", Format(a));
  EXPECT_EQ("unix:rel/y", RoundTrip("unix:rel/y"));
  ASSERT_EQ(0, ursa_addr_parse("unix:@ursa-test", &a));
  EXPECT_EQ('\0', ((sockaddr_un *)&a.ss)->sun_path[0]);
  EXPECT_EQ(offsetof(sockaddr_un, sun_path) + 1 + strlen("ursa-test"), a.len);
  EXPECT_EQ("unix:@ursa-test", Format(a));
  // The longest path that fits: 107 bytes and the NUL.
  std::string longest = "unix:/" + std::string(106, 'p');
  EXPECT_EQ(0, ursa_addr_parse(longest.c_str(), &a)) << ursa_error_detail();
}

struct Bad {
  const char *text;
  const char *says;
};

TEST(Addr, RefusesBadInputNamingTheFault) {
  const Bad bad[] = {
      {"", "empty"},
      {"127.0.0.1", "missing ':PORT'"},
      {"127.0.0.1:", "missing port"},
      {"127.0.0.1:70000", "out of range"},
      {"127.0.0.1:99999999", "out of range"},
      {"127.0.0.1:-1", "not a number"},
      {"127.0.0.1:80x", "stray characters 'x'"},
      {"[::1]", "missing ':PORT'"},
      {"[::1]80", "stray characters"},
      {"[::1:80", "closing ']'"},
      {"[nothex]:80", "not an IPv6 address"},
      {"::1:80", "needs brackets"},
      {"no such host.invalid:80", "stray character ' '"},
      {"nosuchhost.invalid:80", "unknown host 'nosuchhost.invalid'"},
      {"unix:", "empty Unix socket path"},
      {"unix:@", "empty abstract name"},
      {"[fe80::1%nosuchif0]:1", "unknown interface"},
      {"[::1%4294967296]:1", "scope id 4294967296 is out of range"},
      {"[::1%99999999999999999999]:1", "out of range"},
      {"[::1%-1]:1", "unknown interface"},
      {"[::1%]:1", "unknown interface"},
  };
  for (const Bad &b : bad) {
    ursa_addr a;
    EXPECT_EQ(-EINVAL, ursa_addr_parse(b.text, &a)) << b.text;
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), b.says))
        << b.text << " gave: " << ursa_error_detail();
  }
  std::string too_long = "unix:/" + std::string(107, 'p');
  ursa_addr a;
  EXPECT_EQ(-EINVAL, ursa_addr_parse(too_long.c_str(), &a));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "longer than sun_path"));
  EXPECT_EQ(-EINVAL, ursa_addr_parse(nullptr, &a));
  EXPECT_EQ(-EINVAL, ursa_addr_parse("1.2.3.4:5", nullptr));
}

TEST(Addr, FormatReportsLengthNeeded) {
  ursa_addr a;
  ASSERT_EQ(0, ursa_addr_parse("[::1]:7000", &a));
  char tiny[4];
  EXPECT_EQ(10, ursa_addr_format((sockaddr *)&a.ss, a.len, tiny, sizeof(tiny)));
  EXPECT_STREQ("[::", tiny);
  sockaddr_storage ss{};
  ss.ss_family = AF_APPLETALK;
  EXPECT_EQ(-EINVAL, ursa_addr_format((sockaddr *)&ss, sizeof(ss), tiny, 4));
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  char buf[32];
  ursa_addr_format((sockaddr *)&un, sizeof(sa_family_t), buf, sizeof(buf));
  EXPECT_STREQ("unix:", buf);
}

}  // namespace

#!/usr/bin/env bash
# valgrind.sh - memcheck over the single-threaded test suites (valgrind
# serialises threads, and a helper thread blocked behind io_uring_enter
# would stall; the work pool's threads wait on a condition variable, so
# fs_test is here).  A post from a pool thread to an io_uring loop was
# seen not to arrive under valgrind (work_test's first test hangs so on
# io_uring, at 07d13f6 as now; plain, ASan and TSan runs pass), so
# fs_test's one test that waits for pool work on io_uring is left out
# here; ASan and TSan run it.  process_test runs only its pipe-stream
# tests here: valgrind 3.19 does not know pidfd_open (every spawn is
# refused with ENOSYS, as ursa_spawn says on such a kernel), reports no
# exec error through its vfork, and kills the process on a SIGPIPE the
# kernel raises from an io_uring write though the program ignores it.
# batch_test is left out whole: its loop waits in io_uring_enter while a
# second thread of the process talks to it over blocking sockets, and under
# valgrind the two stop making progress (the same stall as the pool post
# above); it runs under ASan and TSan.  Any error or definite leak fails.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1
suites=(addr_test loop_test timer_test fault_test dgram_test unix_test op_test
        bufring_test http_core_test fs_test process_test udp_msg_test)
bazel build --config=debug $(printf '//tests:%s ' "${suites[@]}") || exit 1
bin=$(bazel info --config=debug bazel-bin 2>/dev/null)/tests
# A suite's tests left out under valgrind (a gtest filter), and why above.
declare -A filter=([fs_test]='-*CancelInEachState/uring*'
  [process_test]='*MultishotReadOnly*:*PipeStreamByteExact*:*FifoAndDevice*:*FileWrittenIntoAPipe*:*DescriptorKinds*:*BadOptions*:*WriteToAClosedPipeIsEpipe/epoll*')
passed=0
failed=0
for t in "${suites[@]}"; do
  if timeout 600 valgrind -q --error-exitcode=9 --leak-check=full \
       --errors-for-leak-kinds=definite "$bin/$t" \
       ${filter[$t]:+--gtest_filter=${filter[$t]}} \
       >"/tmp/valgrind-$t.log" 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "valgrind: $t failed:" >&2
    grep -E "==[0-9]+==|FAILED|Failure" "/tmp/valgrind-$t.log" | head -40 >&2
  fi
done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

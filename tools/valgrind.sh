#!/usr/bin/env bash
# valgrind.sh - memcheck over the single-threaded test suites (valgrind
# serialises threads, and a helper thread blocked behind io_uring_enter
# would stall; the work pool's threads wait on a condition variable, so
# fs_test is here).  Any error or definite leak fails.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1
suites=(addr_test loop_test timer_test fault_test dgram_test unix_test op_test
        bufring_test http_core_test fs_test)
bazel build --config=debug $(printf '//tests:%s ' "${suites[@]}") || exit 1
bin=$(bazel info --config=debug bazel-bin 2>/dev/null)/tests
passed=0
failed=0
for t in "${suites[@]}"; do
  if timeout 600 valgrind -q --error-exitcode=9 --leak-check=full \
       --errors-for-leak-kinds=definite "$bin/$t" >"/tmp/valgrind-$t.log" 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "valgrind: $t failed:" >&2
    grep -E "==[0-9]+==|FAILED|Failure" "/tmp/valgrind-$t.log" | head -40 >&2
  fi
done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

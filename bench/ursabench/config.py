"""config.py - the bench as data: the backends, the case matrix, the A/B
variants, and the profile's buckets."""

# ursa-epoll: the uring server on the library's epoll backend, beside the
# hand-written epoll server, so that the report shows what the library's
# epoll backend costs.
BACKENDS = ["uring", "ursa-epoll", "epoll", "select", "blocking", "libuv"]
RUN_ORDER = ["uring", "epoll", "ursa-epoll", "select", "blocking", "libuv"]

COLOURS = {"uring": "#1f77b4", "ursa-epoll": "#17becf", "epoll": "#ff7f0e", "select": "#2ca02c",
           "blocking": "#9467bd", "libuv": "#8c564b", "iperf3": "#7f7f7f"}

KEYS = ["id", "kind", "backend", "proto", "conns", "size", "inflight",
        "rt_per_s", "rt_per_s_min", "rt_per_s_max", "mb_per_s",
        "server_cpu_us_per_rt", "server_cpu_us_per_rt_min",
        "server_cpu_us_per_rt_max", "p50_us", "p99_us", "p999_us",
        "syscalls_per_rt", "enters_per_rt", "enobufs_per_rt", "reads_per_rt",
        "errors", "refused", "repeats"]

def listed_servers(bindir):
    """The servers ursa-echo-server has, in its order, as it lists them
    itself (--list-backends --json)."""
    import json
    import os
    import subprocess
    out = subprocess.run([os.path.join(bindir, "ursa-echo-server"),
                          "--list-backends", "--json"], capture_output=True,
                         text=True, timeout=20, check=True).stdout
    # The UDP-only server (mmsg) has the UDP block; the cases are streams.
    return [s["name"] for s in json.loads(out)
            if "udp_only" not in s["caps"]]


def use_servers(names):
    """A run takes its servers from the program (listed_servers): BACKENDS
    becomes that list (in place, so every module that imported it sees
    it), RUN_ORDER keeps its order for the servers it knows (epoll beside
    uring and ursa-epoll) and runs new ones last, and a new server is drawn
    in grey until COLOURS names it.  The lists above are what a stored run
    is rendered with."""
    BACKENDS[:] = names
    RUN_ORDER[:] = ([b for b in RUN_ORDER if b in names] +
                    [b for b in names if b not in RUN_ORDER])
    for b in names:
        COLOURS.setdefault(b, "#7f7f7f")


IDLE_CONNS = 10000

# The threads block: one case (TCP ping-pong, 256 connections, 64 B) served
# by one loop and by two, for each way of sharing the connections out; the
# server process is pinned to one CPU, the load to the other.
# (label, backend, threads, dispatch, server flags)
THREADS_POINT = ("pingpong", "tcp", 256, 64, 1)
THREAD_VARIANTS = [
    ("1 thread", "uring", 1, "-", []),
    ("2 threads, reuseport", "uring", 2, "reuseport",
     ["--threads", "2", "--dispatch", "reuseport"]),
    ("2 threads, handoff", "uring", 2, "handoff",
     ["--threads", "2", "--dispatch", "handoff"]),
    ("1 thread", "ursa-epoll", 1, "-", []),
    ("2 threads, reuseport", "ursa-epoll", 2, "reuseport",
     ["--threads", "2", "--dispatch", "reuseport"]),
    ("1 thread", "epoll", 1, "-", []),
    ("2 threads, reuseport", "epoll", 2, "reuseport", ["--threads", "2"]),
]

# The wake-up block: ursa-wake's modes, each (mode, backend).
# "uring+F": the uring loop with opt-in feature F (--uring-enable F).
WAKE_MODES = [("post-thread", "uring"), ("post-thread", "uring+sync_msg_ring"),
              ("call-thread", "uring"),
              ("post-loop", "uring"),
              ("post-thread", "ursa-epoll"), ("post-loop", "ursa-epoll"),
              ("eventfd", "epoll"), ("uv-async", "libuv")]

def matrix(full):
    """(kind, proto, conns, size, inflight) for each backend."""
    if full:
        pts = [("pingpong", "tcp", c, s, 1) for c in [1, 16, 64, 256, 1024]
               for s in [64, 512, 4096, 65536]]
        pts += [("pipelined", "tcp", c, s, 16) for c in [1, 64, 256]
                for s in [64, 4096]]
        pts += [("pingpong", "unix", c, s, 1) for c in [1, 64]
                for s in [64, 4096]]
        pts += [("pingpong", "udp", c, s, 1) for c in [1, 64]
                for s in [64, 1400]]
    else:
        # Every factor of 4 from 1 to 256, so that the curves join
        # measured neighbours only (plots.py, GAP).
        pts = [("pingpong", "tcp", c, 64, 1) for c in [1, 4, 16, 64, 256]]
        pts += [("pingpong", "tcp", 64, 4096, 1),
                ("pipelined", "tcp", 64, 64, 16),
                ("pingpong", "unix", 64, 64, 1),
                ("pingpong", "udp", 64, 64, 1)]
    return [(b,) + p for p in pts for b in BACKENDS]

def case_id(b, kind, proto, conns, size, inflight):
    return f"{proto}-{kind}-{conns}c-{size}b-{inflight}i-{b}"

def case_of(c):
    """A case's id without its backend (which may hold a hyphen itself:
    ursa-epoll), the key its backends share."""
    return case_id("", c["kind"], c["proto"], c["conns"], c["size"],
                   c["inflight"])[:-1]

# The A/B block: the uring server with one default feature switched off,
# or one opt-in feature switched on, against its default set-up,
# interleaved run by run so that drift on a shared machine falls on every
# variant alike.  (label, case, server flags)
AB_CASES = {"pingpong": ("pingpong", "tcp", 64, 64, 1),
            "pipelined": ("pipelined", "tcp", 64, 64, 16),
            "4k": ("pingpong", "tcp", 64, 4096, 1),
            "64k": ("pingpong", "tcp", 16, 65536, 1),
            "bulk": ("bulk", "tcp", 1, 65536, 1),
            "64k, 64 KiB buffers": ("pingpong", "tcp", 16, 65536, 1),
            "pipelined 64k": ("pipelined", "tcp", 64, 65536, 8),
            "greet": ("greet", "tcp", 16, 64, 1),
            "4 conns": ("pingpong", "tcp", 4, 64, 1),
            "1 conn": ("pingpong", "tcp", 1, 64, 1),
            "256 conns": ("pingpong", "tcp", 256, 64, 1)}

BUNDLE = ["--uring-enable", "recv_bundle"]

BY_PARTS = ["--uring-enable", "buf_inc"]

BIG_BUFS = ["--buf-size", "65536"]

# Batched waits are adaptive by default (ursa.h, URSA_BATCH_AUTO); the
# rows beside the default switch them off.
NO_BATCH = ["--batch-waits", "never"]
REG_WAIT = ["--uring-enable", "reg_wait"]

AB_VARIANTS = [
    ("default", "pingpong", []),
    # The control: the default again, as a variant; its effect is 1 by
    # construction, so its interval shows the block's noise.
    ("default, again (control)", "pingpong", []),
    ("no multishot recv", "pingpong", ["--uring-disable", "multishot_recv"]),
    ("no DEFER_TASKRUN", "pingpong", ["--uring-disable", "defer_taskrun"]),
    ("no SINGLE_ISSUER, DEFER_TASKRUN", "pingpong",
     ["--uring-disable", "single_issuer,defer_taskrun"]),
    ("no COOP_TASKRUN", "pingpong", ["--uring-disable", "coop_taskrun"]),
    ("no registered ring fd", "pingpong", ["--uring-disable", "reg_ring_fd"]),
    ("no direct descriptors", "pingpong",
     ["--uring-disable", "direct_files"]),
    ("+ recv bundles", "pingpong", BUNDLE),
    ("+ buffers filled by parts", "pingpong", BY_PARTS),
    ("batched waits off", "pingpong", NO_BATCH),
    # Each bounded wait's argument read in place from a registered region
    # (6.13) instead of copied in: the batched waits' cost.
    ("+ registered wait region", "pingpong", REG_WAIT),
    ("default", "4 conns", []),
    ("batched waits off", "4 conns", NO_BATCH),
    ("default", "1 conn", []),
    ("batched waits off", "1 conn", NO_BATCH),
    ("default", "256 conns", []),
    ("batched waits off", "256 conns", NO_BATCH),
    ("+ registered wait region", "256 conns", REG_WAIT),
    ("default", "pipelined", []),
    ("write batch 1 (one send per write)", "pipelined",
     ["--write-batch", "1"]),
    ("default", "4k", []),
    ("echo from a copy (no ursa_buf_keep)", "4k", ["--echo-copy"]),
    # A 64 KiB message takes four reads of the default 16 KiB buffers, and
    # is echoed as four writes; in 64 KiB buffers, one of each.
    ("default", "64k", []),
    ("+ 64 KiB receive buffers", "64k", BIG_BUFS),
    ("default", "64k, 64 KiB buffers", BIG_BUFS),
    ("+ SEND_ZC for writes of 64 KiB", "64k, 64 KiB buffers",
     BIG_BUFS + ["--zc-threshold", "65536"]),
    # 8 messages of 64 KiB in flight per connection.
    ("default", "pipelined 64k", []),
    ("+ 64 KiB receive buffers", "pipelined 64k", BIG_BUFS),
    # A one-way stream of 64 KiB writes into 16 KiB buffers: where a recv
    # finds several buffers' worth queued.
    # Greet: accept, one write, shutdown, close (ursa-load --greet), where
    # the server leaves direct descriptors off by default.
    ("default", "greet", []),
    ("+ direct descriptors", "greet", ["--uring-enable", "direct_files"]),
    ("default", "bulk", []),
    ("+ recv bundles", "bulk", BUNDLE),
    ("+ 64 KiB receive buffers", "bulk", BIG_BUFS),
]

# The quick suite's A/B rows: the control and the batched-wait pairs, the
# rows with targets (loopcost.batching_rows); --full runs them all.
AB_QUICK_CASES = ("pingpong", "4 conns", "1 conn", "256 conns")
AB_QUICK_LABELS = ("default", "default, again (control)", "batched waits off")
# And the opt-in feature that waits for the block's verdict (#34).
AB_QUICK_ROWS = (("+ registered wait region", "pingpong"),)


def ab_variants(full):
    """The A/B rows a run makes: all of them with --full."""
    return [v for v in AB_VARIANTS if full or (
        v[1] in AB_QUICK_CASES and v[0] in AB_QUICK_LABELS) or
        (v[0], v[1]) in AB_QUICK_ROWS]


# Rounds of the A/B block, and each run's measured and warm-up seconds:
# more, shorter runs, so that the interval can leave out a stray round at
# each end (intervals.py) in the time five rounds of 1 s took.
AB_REPEATS = 8
AB_DURATION, AB_WARMUP = 0.5, 0.15

# Techniques the issue names that ursa does not have; the report lists
# them so that their absence is visible, not silent.
AB_MISSING = ["send bundles: queued writes already leave in one sendmsg "
              "(the write-batch row measures that)"]

# Where a profiled server's samples fell, by the first rule that matches
# the symbol (kernel symbols; user space is one bucket).
PROFILE_BUCKETS = [
    ("copies", ("_copy_to_iter", "_copy_from_iter", "copy_user",
                "copy_page", "memcpy", "memmove", "__check_object_size",
                "__virt_addr_valid", "check_heap_object")),
    ("io_uring", ("io_", "__io_", "io_uring")),
    ("readiness (epoll, select, poll)", (
        "ep_", "do_epoll", "__x64_sys_epoll", "do_select", "core_sys_select",
        "do_sys_poll", "__pollwait", "poll_freewait", "sock_poll",
        "tcp_poll", "__x64_sys_select", "__x64_sys_pselect")),
    ("syscall entry and exit", (
        "entry_SYSCALL", "do_syscall", "syscall_", "__x64_sys_",
        "exit_to_user_mode", "__do_sys", "__sys_", "fdget", "__fget",
        "fput", "__fdget")),
    ("network stack", (
        "tcp", "__tcp", "ip_", "__ip", "ipv6", "ip6", "skb", "__skb",
        "kfree_skb", "sock_", "__sock", "sk_", "__sk", "inet", "net_",
        "__netif", "netif", "__dev", "dev_", "loopback", "process_backlog",
        "__napi", "napi", "release_sock", "lock_sock", "__kfree_skb",
        "consume_skb", "unix_", "bpf", "nf_", "__inet", "validate_xmit",
        "sch_", "__qdisc", "qdisc", "raw_v", "__release_sock",
        "__local_bh", "do_softirq", "__do_softirq", "handle_softirqs",
        "irq_exit", "bbr_", "raw_local_deliver", "__alloc_skb",
        "__build_skb", "ipt_", "nft_", "skb_defer", "page_frag")),
    ("memory allocation", ("kmem_cache", "__slab", "kfree", "__kmalloc",
                           "kmalloc", "__alloc", "alloc_pages", "slab_",
                           "___slab", "memcg", "mod_memcg", "__memcg")),
    ("locks, RCU, interrupts", ("_raw_spin", "__raw_callee", "native_",
                                "__rcu", "rcu_", "queued_spin", "__pv_",
                                "_raw_read", "_raw_write")),
    ("scheduler and wake-ups", (
        "schedule", "__schedule", "try_to_wake_up", "finish_task_switch",
        "pick_next", "enqueue_", "dequeue_", "update_", "ttwu", "psi_",
        "__switch_to", "__wake_up", "autoremove_wake", "select_task_rq",
        "native_sched", "sched_", "cpuidle", "default_idle", "set_next",
        "put_prev", "hrtimer", "__hrtimer", "ktime")),
]

# Frames that only pass time on to whoever called them: a sample in one is
# charged to the first caller that belongs to a bucket (interrupts enabled
# again after a wake-up count as the wake-up; at system-call entry, as the
# system call).
PROFILE_PASS_ON = ("pvm_", "__raw_callee_save", "native_", "__pv_", "asm_",
                   "sysvec_", "__sysvec", "irq_", "__irq", "_raw_spin_unlock",
                   "paravirt", "xen_")

# A sample in one of these user-space functions is the system call's trap.
SYSCALL_WRAPPERS = ("__send", "__libc_send", "__libc_recv", "__recv",
                    "epoll_wait", "__GI_epoll_wait", "__epoll_wait", "select",
                    "__select", "poll", "__poll", "__libc_read",
                    "__libc_write", "read", "write", "accept4", "syscall",
                    "__sys_io_uring_enter", "io_uring_enter",
                    "io_uring_submit", "__io_uring_submit", "recv", "send")

PROFILE_LOCKS = "locks, RCU, interrupts"
PROFILE_ALLOC = "memory allocation"
# Buckets whose time is charged to their caller's bucket when there is one.
PASS_TO_CALLER = (PROFILE_LOCKS, PROFILE_ALLOC)

# The TLS block: TCP ping-pong over TLS (ursa-load --tls) at 64
# connections, 64 B and 16 KiB, for ursa's TLS over memory BIOs on both of
# its backends and the hand-written epoll server with OpenSSL on the
# socket.  (backend, size)
TLS_CASES = [(b, s) for s in (64, 16384, 0) for b in ("uring", "ursa-epoll",
                                                      "epoll")]
# (size 0: new handshakes per second, ursa-load --reconnect 1)

# The case the quick suite also runs across a veth pair (netns.py).
VETH_POINT = ("pingpong", "tcp", 64, 64, 1)

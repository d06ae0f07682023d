#!/bin/sh
# /init of the kernel-matrix VM: mounts what synscope and the tests need, runs the integration
# tests once per backend, prints one VMTEST line each and the figures the tests recorded
# (VMFIG, compared between backends by xtask), and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp stays on the initramfs: the payload may live there (a CI checkout in /tmp).
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
for module in $(cat /modules/order); do insmod "/modules/$module"; done
ip link set lo up
mkdir -p /run/netns /var/lib/nginx /var/log/nginx
release=$(uname -r)
# Tests whose outcome does not depend on the backend (refusals before anything is loaded, exit
# codes passed through): run in one cell per kernel, the tracepoint one, which every kernel has.
BACKEND_INDEPENDENT="each_capability_of_the_set_is_named_when_missing without_root_it_says_so
  run_passes_the_commands_exit_code_through a_command_that_cannot_start_is_an_error"
export SYNSCOPE_BIN RUST_BACKTRACE=0
# Runs a test binary (its path, then arguments) one test at a time within the cell's limit
# (CELL_LIMIT seconds, from the kernel command line): output in /tmp/log, exit status in $code,
# tests passed and failed in $p and $f (a run without a result line counts as one failure).
run_test() {
  remaining=$((CELL_LIMIT - ($(date +%s) - cell_start)))
  [ "$remaining" -gt 0 ] || remaining=1
  timeout "$remaining" "$@" --test-threads=1 > /tmp/log 2>&1; code=$?
  result=$(grep '^test result:' /tmp/log | tail -1)
  p=$(echo "$result" | sed -n 's/.* \([0-9]*\) passed.*/\1/p'); p=${p:-0}
  f=$(echo "$result" | sed -n 's/.* \([0-9]*\) failed.*/\1/p'); f=${f:-1}
}

# The failed tests of /tmp/log, each line tagged with $1, and their output.
show_failures() {
  grep -E '^test .* FAILED$' /tmp/log | sed "s|^|$1 |"
  # Without the histograms' spectra (a `spectrum: [` block, one number per line), a failed
  # test's whole report fits; every other line, numbers included, stays. From the test's
  # captured output on: synscope's own account of missing events comes first.
  grep -A600 -e "^---- .* std[a-z]* ----$" -e "panicked at" /tmp/log | awk '
    skip { match($0, /^ */); if (RLENGTH == indent && $0 ~ /^ *\],?$/) skip = 0; next }
    /spectrum: \[$/ { match($0, /^ */); indent = RLENGTH; skip = 1
                       print substr($0, 1, indent) "spectrum: [...],"; next }
    { print }' | head -240 | sed "s|^|VMLOG   |"
}

# The kernel skips a program reached while the same program (fentry, tracepoints) or any kprobe
# handler (kprobes) already runs on that CPU: an interrupt's softirq, such as a SYN-ACK
# retransmit completing a handshake, nesting in a run of process context. Rare on hardware,
# frequent under emulation on a busy host, where a run can stall for milliseconds. synscope
# reports the skips where the kernel counts them (skipped_runs: 5.12+, kprobes 6.7+). For
# kprobes on every kernel, a tracefs kprobe on each function synscope may hook shares the
# kernel's kprobe there and counts its skips (kprobe_profile's third column); tracing stays
# off: counted, not recorded. Keep the list to the kprobe functions of synscope's hook plan
# (probe-user/src/trace/hooks/plan.rs; a unit test checks it).
WATCHED_KPROBES="tcp_conn_request tcp_set_state inet_csk_listen_start security_sock_graft inet_csk_accept
  sock_def_readable tcp_check_req cookie_v4_check cookie_v6_check tcp_req_err tcp_rtx_synack
  tcp_cleanup_rbuf tcp_recvmsg tcp_sendmsg"
watch_kprobes() {
  echo 0 > /sys/kernel/tracing/tracing_on
  for function in $WATCHED_KPROBES; do
    # A function this kernel lacks (cookie_v6_check without IPv6) is not watched.
    echo "p:synscope_watch_$function $function" >> /sys/kernel/tracing/kprobe_events 2>/dev/null
  done
  echo 1 > /sys/kernel/tracing/events/kprobes/enable
}
unwatch_kprobes() {
  echo 0 > /sys/kernel/tracing/events/kprobes/enable
  echo > /sys/kernel/tracing/kprobe_events
}
kprobe_misses() {
  cat /sys/kernel/tracing/kprobe_profile 2>/dev/null |
    awk '$1 ~ /^synscope_watch_/ { n += $3 } END { print n + 0 }'
}

# BACKENDS comes from the kernel command line, comma-separated.
for backend in $(echo "$BACKENDS" | tr , ' '); do
  export SYNSCOPE_HOOKS=$backend
  if ! "$SYNSCOPE_BIN" check > /tmp/check 2>&1; then
    # Only synscope's own verdict makes a cell unsupported; anything else is a failure.
    if grep -q 'synscope cannot trace here' /tmp/check; then
      echo "VMTEST $release $backend UNSUPPORTED $(grep -m1 'cannot trace here' /tmp/check)"
    else
      echo "VMTEST $release $backend FAIL (synscope check: $(head -c 400 /tmp/check | tr '\n' ' '))"
    fi
    continue
  fi
  skip=""
  if [ "$backend" != tracepoint ]; then
    for name in $BACKEND_INDEPENDENT; do skip="$skip --skip $name"; done
  fi
  passed=0; failed=0; cell_start=$(date +%s)
  export SYNSCOPE_FIGURES=/tmp/figures.$backend
  rm -f "$SYNSCOPE_FIGURES"
  [ "$backend" = kprobe ] && watch_kprobes
  for test in $(cat /vmtests/list); do
    test_start=$(date +%s)
    name=$(basename "$test")
    missed_before=$(kprobe_misses)
    [ -f "$SYNSCOPE_FIGURES" ] && cp "$SYNSCOPE_FIGURES" /tmp/figures.before
    # shellcheck disable=SC2086 # $skip is a list of arguments
    run_test "$test" $skip
    missed=$(( $(kprobe_misses) - missed_before ))
    failed_tests=$(grep -E '^test .* FAILED$' /tmp/log | sed 's/^test \(.*\) \.\.\. FAILED$/\1/')
    # synscope's own report names the runs the kernel skipped, where the kernel counts them
    # (the test helpers print it: "runs skipped {}" when none).
    reported=$(grep -c 'runs skipped {"' /tmp/log)
    if [ -n "$failed_tests" ] && [ $((missed + reported)) -gt 0 ] && [ "$code" -ne 124 ] && [ "$code" -ne 143 ]; then
      # The kernel skipped hits while these tests ran (it said so): their figures may be short
      # through no fault of synscope's. The failed ones run once more; a second failure stands,
      # whatever the kernel did then.
      echo "VMLOG   $backend $name: the kernel skipped $missed kprobe hits, and $reported reports named skipped runs; rerunning:" $failed_tests
      show_failures "VMLOG   first run:"
      first_passed=$p
      # The figures the failed run wrote are not kept.
      if [ -f /tmp/figures.before ]; then cp /tmp/figures.before "$SYNSCOPE_FIGURES"; else rm -f "$SYNSCOPE_FIGURES"; fi
      # shellcheck disable=SC2086 # one argument per test name
      run_test "$test" --exact $failed_tests
      p=$((first_passed + p))
    fi
    rm -f /tmp/figures.before
    [ "$missed" -gt 0 ] && echo "VMLOG   $backend $name: the kernel skipped $missed kprobe hits"
    if [ "$code" -eq 124 ] || [ "$code" -eq 143 ]; then echo "VMFAIL $release $backend $name: cell over its ${CELL_LIMIT} s limit"; fi
    echo "VMLOG   $backend $name: $(( $(date +%s) - test_start )) s"
    passed=$((passed + p)); failed=$((failed + f))
    show_failures "VMFAIL $release $backend $name:"
  done
  if [ "$backend" = kprobe ]; then
    echo "VMLOG   kprobe: the kernel skipped $(kprobe_misses) kprobe hits over the cell"
    unwatch_kprobes
  fi
  [ -f "$SYNSCOPE_FIGURES" ] && sed "s|^|VMFIG $release $backend |" "$SYNSCOPE_FIGURES"
  verdict=PASS; [ "$failed" -eq 0 ] || verdict=FAIL
  echo "VMTEST $release $backend $verdict ($passed scenarios passed, $failed failed) in $(( $(date +%s) - cell_start )) s of ${CELL_LIMIT} s"
done
poweroff -f

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
  for test in $(cat /vmtests/list); do
    test_start=$(date +%s)
    # CELL_LIMIT (seconds, from the kernel command line) bounds the whole cell.
    remaining=$((CELL_LIMIT - (test_start - cell_start)))
    [ "$remaining" -gt 0 ] || remaining=1
    # shellcheck disable=SC2086 # $skip is a list of arguments
    timeout "$remaining" "$test" --test-threads=1 $skip > /tmp/log 2>&1; code=$?
    if [ "$code" -eq 124 ] || [ "$code" -eq 143 ]; then echo "VMFAIL $release $backend $(basename "$test"): cell over its ${CELL_LIMIT} s limit"; fi
    echo "VMLOG   $backend $(basename "$test"): $(( $(date +%s) - test_start )) s"
    result=$(grep '^test result:' /tmp/log | tail -1)
    p=$(echo "$result" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
    f=$(echo "$result" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1}))
    grep -E '^test .* FAILED$' /tmp/log | sed "s|^|VMFAIL $release $backend $(basename "$test"): |"
    # Without the histograms' spectra (a `spectrum: [` block, one number per line), a failed
    # test's whole report fits; every other line, numbers included, stays.
    grep -A600 "panicked at" /tmp/log | awk '
      skip { match($0, /^ */); if (RLENGTH == indent && $0 ~ /^ *\],?$/) skip = 0; next }
      /spectrum: \[$/ { match($0, /^ */); indent = RLENGTH; skip = 1
                         print substr($0, 1, indent) "spectrum: [...],"; next }
      { print }' | head -240 | sed "s|^|VMLOG   |"
  done
  [ -f "$SYNSCOPE_FIGURES" ] && sed "s|^|VMFIG $release $backend |" "$SYNSCOPE_FIGURES"
  verdict=PASS; [ "$failed" -eq 0 ] || verdict=FAIL
  echo "VMTEST $release $backend $verdict ($passed scenarios passed, $failed failed) in $(( $(date +%s) - cell_start )) s of ${CELL_LIMIT} s"
done
poweroff -f

// The programs live in the `probe-ebpf` binary (src/main.rs). This empty library only exists so
// that probe-user can list this crate as a build-dependency, which makes cargo rebuild the
// userspace binary when the kernel side changes.
#![no_std]

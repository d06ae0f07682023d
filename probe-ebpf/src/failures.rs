//! Kernel reads that failed, counted per stage in `FAILURES` instead of dropped quietly, so that
//! a report can say its figures may be low.
//!
//! The programs' inner functions return `Result<_, i32>`: `Err(0)` means "not ours, skip" (for
//! example a packet without a route, or counters whose location is unknown), a negative value
//! is a failed kernel read (`bpf_probe_read_kernel`'s errno). Only the latter is counted.

use crate::maps::FAILURES;

/// Counts `result` in this CPU's slot of `stage` (`probe_common::STAGE_*`) if it is a failed
/// kernel read. Costs one branch when the program succeeded.
#[inline(always)]
pub fn count<T>(stage: u32, result: Result<T, i32>) {
    if let Err(error) = result
        && error < 0
        && let Some(failures) = FAILURES.get_ptr_mut(stage)
    {
        // SAFETY: the map lookup returned a valid, aligned pointer to this CPU's u64 slot, and
        // programs do not migrate between CPUs while they run, so no other writer can race with
        // this increment.
        unsafe { *failures += 1 };
    }
}

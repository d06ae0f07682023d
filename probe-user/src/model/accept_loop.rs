//! How a listener's connections are accepted: by which threads, in batches of how many per
//! wake-up, and the longest stretch the accept queue held connections while nobody accepted.

use std::collections::{BTreeMap, BTreeSet};

/// Accepts by one thread this close together belong to one wake-up of its accept loop (an
/// accept loop drains its queue in back-to-back calls; the next wake-up comes after other
/// work, a poll, or a new connection's arrival).
const BATCH_GAP_NS: u64 = 100_000;

/// Threads followed per process; beyond, new ones are not (a pool of thousands is reported as
/// at least this many).
const MAX_THREADS: usize = 4_096;

#[derive(Clone, Debug, Default)]
pub struct AcceptLoop {
    /// Accepting threads per process.
    pub threads: BTreeMap<u32, BTreeSet<u32>>,
    /// Per thread: its last accept and the size of the batch it is in.
    open_batches: super::FastHashMap<u32, (u64, u64)>,
    closed_batches: u64,
    pub largest_batch: u64,
    batched_accepts: u64,
    /// The longest stretch with connections in the queue and no accept, and what it needs.
    longest_absence_ns: u64,
    last_accept_ns: u64,
    queued_since_ns: Option<u64>,
}

impl AcceptLoop {
    /// A child joined the accept queue at `at_ns`; `was_empty` if none waited before it.
    pub fn queued(&mut self, at_ns: u64, was_empty: bool) {
        if was_empty {
            self.queued_since_ns = Some(at_ns);
        }
    }

    /// Thread `tid` of process `pid` accepted at `at_ns`; `queue_empty` if no followed child
    /// waits any more.
    pub fn accepted(&mut self, pid: u32, tid: u32, at_ns: u64, queue_empty: bool) {
        let threads = self.threads.entry(pid).or_default();
        if threads.len() < MAX_THREADS {
            threads.insert(tid);
        }
        if let Some(since) = self.queued_since_ns {
            let idle_from = since.max(self.last_accept_ns);
            self.longest_absence_ns = self.longest_absence_ns.max(at_ns.saturating_sub(idle_from));
        }
        self.last_accept_ns = self.last_accept_ns.max(at_ns);
        if queue_empty {
            self.queued_since_ns = None;
        }
        self.batched_accepts += 1;
        let batch = self.open_batches.entry(tid).or_insert((0, 0));
        if batch.1 > 0 && at_ns.saturating_sub(batch.0) <= BATCH_GAP_NS {
            batch.1 += 1;
        } else {
            if batch.1 > 0 {
                self.closed_batches += 1;
            }
            batch.1 = 1;
        }
        batch.0 = at_ns;
        self.largest_batch = self.largest_batch.max(batch.1);
    }

    /// Accepts per wake-up, on average; None without accepts.
    pub fn mean_batch(&self) -> Option<f64> {
        let open = self.open_batches.values().filter(|(_, n)| *n > 0).count() as u64;
        let batches = self.closed_batches + open;
        (batches > 0).then(|| self.batched_accepts as f64 / batches as f64)
    }

    /// The longest stretch the queue held connections while nobody accepted, up to `now_ns`
    /// for connections still waiting (0: unknown end).
    pub fn longest_absence_ns(&self, now_ns: u64) -> u64 {
        let ongoing = match self.queued_since_ns {
            Some(since) if now_ns != 0 => now_ns.saturating_sub(since.max(self.last_accept_ns)),
            _ => 0,
        };
        self.longest_absence_ns.max(ongoing)
    }

    pub fn thread_count(&self) -> u64 {
        self.threads.values().map(|t| t.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn an_event_loop_accepting_in_bursts() {
        let mut l = AcceptLoop::default();
        // Ten connections queue at 0..9 ms; the loop is busy until 100 ms, then accepts them
        // back to back, 10 µs apart.
        for i in 0..10 {
            l.queued(i * MS, i == 0);
        }
        for i in 0..10 {
            l.accepted(7, 7, 100 * MS + i * 10_000, i == 9);
        }
        assert_eq!(l.largest_batch, 10);
        assert_eq!(l.mean_batch(), Some(10.0));
        assert_eq!(l.longest_absence_ns(0), 100 * MS);
        assert_eq!(l.thread_count(), 1);
    }

    #[test]
    fn a_pool_accepting_one_at_a_time_and_a_queue_left_waiting() {
        let mut l = AcceptLoop::default();
        l.queued(0, true);
        l.accepted(1, 11, 5 * MS, true);
        l.queued(10 * MS, true);
        l.accepted(2, 21, 12 * MS, true);
        l.queued(20 * MS, true);
        l.accepted(1, 12, 50 * MS, false);
        assert_eq!(l.mean_batch(), Some(1.0));
        assert_eq!(l.thread_count(), 3);
        assert_eq!(l.longest_absence_ns(0), 30 * MS);
        // Still waiting at 200 ms, since the last accept at 50 ms.
        assert_eq!(l.longest_absence_ns(200 * MS), 150 * MS);
    }
}

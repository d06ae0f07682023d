//! How many entries the kernel programs' maps of connections in progress lost to eviction.
//!
//! `SYN_TIMES` and `CONNECTIONS` are LRU maps of `PENDING_ENTRIES` each: when one is full,
//! adding an entry evicts the least recently used. `CONNECTIONS` holds two kinds of entries,
//! children waiting in an accept queue and accepted connections followed to their first
//! response (accept() turns the first into the second in place), counted apart. That is by design for SYNs never
//! answered (a flood) and children never accepted, but it also leaves a connection that went on
//! without a stage's figure. The events say what their programs added and removed (`PENDING_*`
//! bits), the programs count the rare removals that send no event (`PENDING_TALLY`), and what
//! was added, not removed and is no longer there was evicted. Counting in the events costs the
//! kernel programs nothing per connection; a count in a map would cost a lookup each time.

use aya::{
    Ebpf, Pod,
    maps::{HashMap, Map, MapData, PerCpuArray},
};
use probe_common::{
    Connection, FlowKey, PENDING_CHILD_ADDED, PENDING_CHILD_REMOVED, PENDING_ENTRIES,
    PENDING_FOLLOWED_ADDED, PENDING_FOLLOWED_REMOVED, PENDING_SYN_ADDED, PENDING_SYN_REMOVED,
    PendingTally, SynStamp,
};

use crate::report::PendingEvicted;

/// Entries added to and removed from each map, as the events report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingFlow {
    syn: AddedRemoved,
    children: AddedRemoved,
    followed: AddedRemoved,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AddedRemoved {
    added: u64,
    removed: u64,
}

impl AddedRemoved {
    fn count(&mut self, bits: u16, added: u16, removed: u16) {
        self.added += u64::from(bits & added != 0);
        self.removed += u64::from(bits & removed != 0);
    }

    /// Added - removed - present; never below 0. The programs still run while the entries are
    /// counted, so under load it is approximate.
    fn evicted(&self, present: u64) -> u64 {
        self.added
            .saturating_sub(self.removed)
            .saturating_sub(present)
    }
}

impl PendingFlow {
    /// Counts an event's `pending` bits.
    pub fn count(&mut self, bits: u16) {
        if bits == 0 {
            return;
        }
        self.syn.count(bits, PENDING_SYN_ADDED, PENDING_SYN_REMOVED);
        self.children
            .count(bits, PENDING_CHILD_ADDED, PENDING_CHILD_REMOVED);
        self.followed
            .count(bits, PENDING_FOLLOWED_ADDED, PENDING_FOLLOWED_REMOVED);
    }

    fn with_tally(&self, tally: &PendingTally) -> Self {
        let mut flow = self.clone();
        // The events count each replacement as an addition; the leftover it replaced is gone.
        flow.syn.removed += tally.syn_replaced;
        flow.children.removed += tally.children_replaced + tally.children_stale_removed;
        flow.followed.removed += tally.followed_replaced + tally.followed_stale_removed;
        flow
    }

    fn evicted(&self, present: [u64; 3]) -> PendingEvicted {
        PendingEvicted {
            capacity: PENDING_ENTRIES,
            syn_stamps: self.syn.evicted(present[0]),
            queued_children: self.children.evicted(present[1]),
            followed: self.followed.evicted(present[2]),
        }
    }
}

/// Evictions since the start, from the events' counts (`flow`, every event drained), the SYNs
/// the programs counted instead of sending (`syns_stamped` of them added an entry), the
/// programs' tally, and each map's entries now (one system call per entry: at the end of a
/// run, not on every refresh).
pub fn evicted(
    ebpf: &Ebpf,
    flow: &PendingFlow,
    syns_stamped: u64,
) -> anyhow::Result<PendingEvicted> {
    let tally: PerCpuArray<&MapData, PendingTally> =
        PerCpuArray::try_from(map(ebpf, "PENDING_TALLY")?)?;
    let mut sum = PendingTally::default();
    for cpu in tally.get(&0, 0)?.iter() {
        sum.syn_replaced += cpu.syn_replaced;
        sum.children_replaced += cpu.children_replaced;
        sum.children_stale_removed += cpu.children_stale_removed;
        sum.followed_replaced += cpu.followed_replaced;
        sum.followed_stale_removed += cpu.followed_stale_removed;
    }
    let (waiting, followed) = connections(ebpf)?;
    let present = [
        entries::<FlowKey, SynStamp>(ebpf, "SYN_TIMES")?,
        waiting,
        followed,
    ];
    let mut flow = flow.with_tally(&sum);
    flow.syn.added += syns_stamped;
    Ok(flow.evicted(present))
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Map> {
    ebpf.map(name)
        .ok_or_else(|| anyhow::anyhow!("the kernel programs have no {name} map"))
}

/// The map's entries, at most its capacity: the programs still run, and a key removed under
/// the walk sends it back to the first bucket, where it counts some entries again.
fn entries<K: Pod, V: Pod>(ebpf: &Ebpf, name: &str) -> anyhow::Result<u64> {
    let map: HashMap<&MapData, K, V> = HashMap::try_from(map(ebpf, name)?)?;
    let mut count = 0u64;
    for key in map.keys() {
        key?;
        count += 1;
        if count == u64::from(PENDING_ENTRIES) {
            break;
        }
    }
    Ok(count)
}

/// `CONNECTIONS`' entries (at most its capacity, as in `entries`): children waiting in an
/// accept queue, and accepted connections followed to their first response.
fn connections(ebpf: &Ebpf) -> anyhow::Result<(u64, u64)> {
    let map: HashMap<&MapData, u64, Connection> = HashMap::try_from(map(ebpf, "CONNECTIONS")?)?;
    let (mut waiting, mut followed) = (0u64, 0u64);
    for entry in map.iter() {
        // An entry removed under the walk is skipped, not an error.
        let Ok((_, connection)) = entry else { continue };
        if connection.accepted() {
            followed += 1;
        } else {
            waiting += 1;
        }
        if waiting + followed == u64::from(PENDING_ENTRIES) {
            break;
        }
    }
    Ok((waiting, followed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_added_and_neither_removed_nor_present_was_evicted() {
        let mut flow = PendingFlow::default();
        // 100 SYNs stamped, 60 of them completed, of which 50 queued and 40 accepted, each
        // accept followed and 30 answered.
        for _ in 0..100 {
            flow.count(PENDING_SYN_ADDED);
        }
        for i in 0..60 {
            flow.count(PENDING_SYN_REMOVED | if i < 50 { PENDING_CHILD_ADDED } else { 0 });
        }
        for _ in 0..40 {
            flow.count(PENDING_CHILD_REMOVED | PENDING_FOLLOWED_ADDED);
        }
        for _ in 0..30 {
            flow.count(PENDING_FOLLOWED_REMOVED);
        }
        flow.count(0);
        // 2 of the 50 children took the place of a leftover entry, and 3 leftovers were found
        // and removed.
        let tally = PendingTally {
            children_replaced: 2,
            children_stale_removed: 3,
            ..Default::default()
        };
        let evicted = flow.with_tally(&tally).evicted([30, 4, 10]);
        assert_eq!(
            (
                evicted.syn_stamps,
                evicted.queued_children,
                evicted.followed
            ),
            // 40 stamps left, 30 there; 50 - 45 = 5 children left, 4 there; 10 left, 10 there.
            (10, 1, 0)
        );
        // Removals counted after the entries were: not below 0.
        assert_eq!(flow.evicted([50, 50, 50]).syn_stamps, 0);
    }
}

//! Loading the kernel programs and reading their events.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use probe_common::{ConnEvent, ListenCounters, ListenerKey, ProbeConfig, QueueDepths, SynCount};
use tokio::io::unix::AsyncFd;

use super::hooks;
use crate::host::{btf, kallsyms::Kallsyms, kernel_offsets, preflight};

/// The compiled kernel programs, built by build.rs.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// The function that releases a listener's SYN; see probe-ebpf/src/syn.rs.
const SYN_CONSUMER: &str = "tcp_rcv_state_process";

/// What to trace.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    /// Only these ports; empty means every port.
    pub ports: Vec<u16>,
    pub hooks: hooks::HookChoice,
    /// Follow accepted connections to their first response byte (`--phases`).
    pub phases: bool,
    /// Every SYN as an event, for a view that shows each connection's SYNs (`synscope
    /// trace`); otherwise the kernel programs count them per listener, which costs them a
    /// little less and synscope's process one event fewer per connection.
    pub syn_events: bool,
}

/// Attached kernel programs. Dropping it detaches them.
pub struct Tracer {
    ebpf: Ebpf,
    events: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    /// Failed kernel reads, per CPU, indexed by stage.
    failures: PerCpuArray<MapData, u64>,
    queues: HashMap<MapData, ListenerKey, QueueDepths>,
    /// SYNs per listener counted by the kernel programs (see `TraceOptions::syn_events`).
    syn_counts: PerCpuHashMap<MapData, ListenerKey, SynCount>,
    /// The drop reason of a final ACK that found the accept queue full (6.15+).
    pub listen_overflow_reason: Option<u32>,
    pub hooks: Vec<hooks::StageHook>,
    links: hooks::Links,
    kprobe_links: super::skipped::KprobeLinks,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.links.detach_all(&mut self.ebpf);
    }
}

impl Tracer {
    pub fn start(options: &TraceOptions) -> anyhow::Result<Self> {
        preflight::require_root()?;
        preflight::ensure_tracefs()?;
        if PROBES.is_empty() {
            bail!(
                "this synscope was built with SYNSCOPE_SKIP_EBPF=1 and holds no kernel programs; rebuild it without"
            );
        }
        // The kernel formats /proc/kallsyms as it is read, the largest part of a start under
        // emulation: read on another CPU while the BTF is parsed, twice (synscope's own
        // reader for the offsets, aya's for the loader).
        let (kernel_btf, aya_btf, symbols) = std::thread::scope(|scope| {
            let symbols = scope.spawn(Kallsyms::read);
            let aya_btf = scope.spawn(aya::Btf::from_sys_fs);
            let kernel_btf = btf::Btf::from_kernel();
            let symbols = joined("reading /proc/kallsyms", symbols.join());
            let aya_btf = aya_btf
                .join()
                .map(|parsed| parsed.context("cannot read the kernel's BTF"));
            let aya_btf = joined("parsing the kernel's BTF", aya_btf);
            (kernel_btf, aya_btf, symbols)
        });
        let kernel_btf = kernel_btf?;
        let offsets = kernel_offsets::resolve(&kernel_btf)
            .context("this kernel's structures are not the ones synscope knows")?;
        let symbols = symbols?;
        let aya_btf = aya_btf?;
        let (syn_consumer_start, syn_consumer_end) = symbols.function_range(SYN_CONSUMER)?;
        let listen_overflow_reason = kernel_offsets::listen_overflow_reason(&kernel_btf);
        // Without them the listen_drops stage is left out, and drops come from the counters.
        let (listen_counters, unavailable) =
            match kernel_offsets::listen_counters(&kernel_btf, &symbols) {
                Ok(counters) => (counters, Vec::new()),
                Err(e) => (
                    ListenCounters::default(),
                    vec![(hooks::Stage::ListenDrops, format!("{e:#}"))],
                ),
            };
        // Without them io_uring accepts are not observable through tracepoints.
        let (io_uring, unavailable_extras) = match kernel_offsets::io_uring(&kernel_btf) {
            Ok(offsets) => (offsets, Vec::new()),
            Err(e) => (
                Default::default(),
                vec![(hooks::IO_URING_EXTRA, format!("io_uring accepts: {e:#}"))],
            ),
        };
        let mut turned_off = Vec::new();
        if !options.phases {
            turned_off.push((
                hooks::Stage::Phases,
                "turned off (--phases none)".to_owned(),
            ));
        }
        let follow_responses = u32::from(options.phases);
        let syn_events = u32::from(options.syn_events);
        let config = ProbeConfig {
            offsets,
            filter_ports: u32::from(!options.ports.is_empty()),
            _pad: 0,
        };

        // Kernels account BPF memory to the memory cgroup; raising RLIMIT_MEMLOCK only matters
        // on old kernels and is refused without CAP_SYS_RESOURCE, so a failure is not fatal.
        preflight::raise_memlock_limit();

        let mut ebpf = EbpfLoader::new()
            .btf(&aya_btf)
            .override_global("CONFIG", &config, true)
            .override_global("SYN_CONSUMER_START", &syn_consumer_start, true)
            .override_global("SYN_CONSUMER_END", &syn_consumer_end, true)
            .override_global("LISTEN_COUNTERS", &listen_counters, true)
            .override_global("IO_URING", &io_uring, true)
            .override_global("FOLLOW_RESPONSES", &follow_responses, true)
            .override_global("SYN_EVENTS", &syn_events, true)
            .override_global(
                "FEXIT_RETURN",
                &kernel_offsets::fexit_return(&kernel_btf),
                true,
            )
            .load(PROBES)
            .context("cannot load synscope's kernel programs")?;

        let mut ports: HashMap<_, u16, u8> = HashMap::try_from(
            ebpf.map_mut("PORTS")
                .ok_or_else(|| anyhow!("PORTS map missing"))?,
        )?;
        for &port in &options.ports {
            ports
                .insert(&port, &1, 0)
                .context("cannot set the port filter")?;
        }

        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("EVENTS map missing"))?,
        )?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map("LOST")
                .ok_or_else(|| anyhow!("LOST map missing"))?,
        )?;
        let failures = PerCpuArray::try_from(
            ebpf.take_map("FAILURES")
                .ok_or_else(|| anyhow!("FAILURES map missing"))?,
        )?;
        let queues = HashMap::try_from(
            ebpf.take_map("QUEUES")
                .ok_or_else(|| anyhow!("QUEUES map missing"))?,
        )?;
        let syn_counts = PerCpuHashMap::try_from(
            ebpf.take_map("SYN_COUNTS")
                .ok_or_else(|| anyhow!("SYN_COUNTS map missing"))?,
        )?;
        // Attach last: maps and filters are in place before the first event.
        let mut links = hooks::Links::default();
        let hooks = hooks::attach_plan(
            &mut ebpf,
            &aya_btf,
            &mut links,
            options.hooks,
            &unavailable,
            &unavailable_extras,
            &turned_off,
        )?;
        Ok(Self {
            ebpf,
            queues,
            syn_counts,
            listen_overflow_reason,
            // SAFETY: the ring buffer owns its fd and keeps it open until the AsyncFd drops it.
            events: unsafe { AsyncFd::register(events) }
                .map_err(|e| anyhow!("cannot poll the event ring buffer: {e}"))?,
            lost,
            failures,
            hooks,
            links,
            kprobe_links: super::skipped::KprobeLinks::find(),
        })
    }

    /// Waits until events are available.
    pub async fn readable(&mut self) -> anyhow::Result<()> {
        let mut guard = self.events.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands up to `limit` events from the ring buffer to `sink`; true if more are waiting.
    pub fn drain(&mut self, limit: usize, mut sink: impl FnMut(&ConnEvent)) -> bool {
        let ring = self.events.get_mut();
        for _ in 0..limit {
            let Some(item) = ring.next() else {
                return false;
            };
            // A whole ConnEvent, or its head alone (SYN and handshake events).
            let Some(event) = ConnEvent::from_record(&item) else {
                continue;
            };
            sink(&event);
        }
        true
    }

    /// Deepest queues seen per listener by the kernel programs since the last call; each is
    /// reset so that the next call gives the next interval's maxima (a raise between the
    /// read and the reset, microseconds apart, may be missed).
    pub fn take_queue_depths(&mut self) -> Vec<(ListenerKey, QueueDepths)> {
        let depths: Vec<(ListenerKey, QueueDepths)> =
            self.queues.iter().filter_map(Result::ok).collect();
        for (key, seen) in &depths {
            let reset = QueueDepths {
                backlog: seen.backlog,
                ..Default::default()
            };
            let _ = self.queues.insert(key, &reset, 0);
        }
        depths
    }

    /// The SYNs each listener received since the start, as the kernel programs counted them
    /// (summed over CPUs); SYNs sent as events are not in these.
    pub fn syn_counts(&self) -> BTreeMap<ListenerKey, SynCount> {
        self.syn_counts
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let total = per_cpu
                    .iter()
                    .fold(SynCount::default(), |sum, cpu| SynCount {
                        syns: sum.syns + cpu.syns,
                        stamped: sum.stamped + cpu.stamped,
                    });
                (key, total)
            })
            .collect()
    }

    /// Whether `stage` has an attached hook.
    pub fn observes(&self, stage: hooks::Stage) -> bool {
        self.hooks
            .iter()
            .any(|h| h.stage == stage && h.active.is_some())
    }

    /// Events the kernel could not hand over because the ring buffer was full, since the
    /// start (0 if the counter cannot be read: it is a map of our own, so that does not happen).
    pub fn lost_events(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// Entries the maps of connections in progress lost to eviction since the start.
    /// `flow`: what every event drained so far said of those maps; `syns_stamped`: the SYNs
    /// counted in the kernel (not sent as events) that put an entry in the SYN-time map, read
    /// just before those events were drained.
    pub fn pending_evicted(
        &self,
        flow: &super::pending::PendingFlow,
        syns_stamped: u64,
    ) -> anyhow::Result<crate::report::PendingEvicted> {
        super::pending::evicted(&self.ebpf, flow, syns_stamped)
    }

    /// Runs the kernel skipped per stage since the start (see `skipped`); stages it did not
    /// skip are left out.
    pub fn skipped_runs(&self) -> BTreeMap<String, u64> {
        let mut per_stage = BTreeMap::new();
        let programs = self.links.programs();
        for (program, skips) in super::skipped::skips(&self.ebpf, &programs, &self.kprobe_links) {
            if let (Some(stage), true) = (hooks::stage_of(program), skips > 0) {
                *per_stage.entry(stage.name().to_owned()).or_default() += skips;
            }
        }
        per_stage
    }

    /// Failed kernel reads per stage since the start, summed over CPUs.
    pub fn kernel_failures(&self) -> BTreeMap<String, u64> {
        hooks::Stage::ALL
            .iter()
            .map(|&stage| {
                let count = self
                    .failures
                    .get(&stage.index(), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (stage.name().to_owned(), count)
            })
            .collect()
    }
}

/// A helper thread's result; a panic in it becomes an error saying what it was doing.
fn joined<T>(what: &str, result: std::thread::Result<anyhow::Result<T>>) -> anyhow::Result<T> {
    result.unwrap_or_else(|_| Err(anyhow!("{what} failed")))
}

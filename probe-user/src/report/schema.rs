//! Every type of the JSON report (schema 1), in one place: the report is a public interface
//! (see the README, and its JSON Schema `probe-user/schema/report-1.json`, [`JSON_SCHEMA`]);
//! fields may be added, never renamed or removed without bumping [`SCHEMA`]. A field added or
//! changed here is added or changed in that file too: the tests validate reports against it.
//! The same types deserialize, so tests and other programs read a report back typed.

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

/// The JSON Schema (draft 2020-12) of report schema [`SCHEMA`]:
/// `probe-user/schema/report-1.json`.
pub const JSON_SCHEMA: &str = include_str!("../../schema/report-1.json");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub kernel: String,
    /// The traced command (`synscope run`), null otherwise.
    #[serde(default)]
    pub command: Option<String>,
    /// Stage -> the hook that observed it.
    pub hooks: BTreeMap<String, String>,
    /// Stages no hook observes on this kernel -> why (figures that depend on them are null).
    #[serde(default)]
    pub unobserved: BTreeMap<String, String>,
    pub duration_ms: u64,
    /// Events the kernel programs could not hand over (ring buffer full).
    pub lost_events: u64,
    /// Kernel reads that failed in a program, per stage: each is an event left incomplete or
    /// not sent. Non-zero means figures may be low; the text report warns.
    #[serde(default)]
    pub kernel_failures: BTreeMap<String, u64>,
    /// Runs of a stage's programs the kernel skipped (a kprobe reached inside another's handler,
    /// a kretprobe without a free instance, a program reached while the kernel's BPF guard was
    /// held; see `trace::skipped`): each may be an event lost. Counted by kernels 5.12+ (fentry,
    /// tracepoints) and 6.7+ (kprobes); non-zero means figures may be low.
    #[serde(default)]
    pub skipped_runs: BTreeMap<String, u64>,
    /// Entries the kernel's maps of connections in progress lost to eviction over the run;
    /// only in a run's final report without lost events or failed kernel reads (null
    /// otherwise: it is counted from the events; a run the kernel skipped changed no map).
    #[serde(default)]
    pub pending_evicted: Option<PendingEvicted>,
    pub listeners: Vec<ListenerReport>,
    /// The namespaces of the reported listeners, with their own counters over the run.
    pub namespaces: Vec<NamespaceReport>,
    /// Every `--fail-if` threshold, per port it applied to; empty without thresholds.
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
    /// What each second of the run saw, per port (ports without traffic in a second are left
    /// out of it).
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
}

/// One second (or the last, shorter, interval) of one port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// When the interval began, in seconds since tracing started.
    pub second: u64,
    pub duration_ms: u64,
    pub netns: u32,
    pub port: u16,
    pub syn_received: u64,
    pub handshakes: u64,
    pub accepted: u64,
    /// As in the listener's `drops`; null where not attributable.
    pub listen_drops: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub syn_queue_full: Option<u64>,
    /// The longest the accept queue got in the interval, and its limit.
    pub accept_queue_max: Option<u32>,
    pub backlog: Option<u32>,
    /// p99 of the accept waits of connections accepted in the interval; null without any.
    pub accept_wait_p99_us: Option<f64>,
}

/// One `--fail-if` threshold, checked on one port (or on the whole run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The expression as given, e.g. `8080:accept_wait.p99 > 5ms`.
    pub expression: String,
    /// The port it was checked on; null for a run-wide figure (`lost_events`), or when no
    /// port saw traffic.
    pub port: Option<u16>,
    /// The figure, e.g. `accept_wait.p99`.
    pub figure: String,
    /// The comparison: `>`, `>=`, `<`, `<=`, `==` or `!=`.
    pub op: String,
    /// What was measured, in `unit`; null when nothing could be (see `reason`).
    pub value: Option<f64>,
    /// The limit, in `unit`.
    pub limit: f64,
    /// `us` for latencies, empty for counts.
    pub unit: String,
    /// True when the failure condition was not met.
    pub held: bool,
    /// Why it broke without a value (no traffic, not observable), or why it held without one;
    /// null otherwise.
    pub reason: Option<String>,
}

/// Entries evicted from the kernel programs' LRU maps of connections in progress, each of
/// `capacity` entries, to make room for new ones. SYNs never answered (a flood, drops) and
/// children never accepted are evicted by design; each eviction of a connection that went on
/// leaves it without a figure: its handshake without the SYN time, its accept without the
/// accept-queue wait, or its first request without the phases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingEvicted {
    pub capacity: u32,
    pub syn_stamps: u64,
    pub queued_children: u64,
    pub followed: u64,
}

impl PendingEvicted {
    pub fn total(&self) -> u64 {
        self.syn_stamps + self.queued_children + self.followed
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceReport {
    pub netns: u32,
    pub sysctls: Sysctls,
    /// `TcpExt` listen-path counters (and `Tcp` PassiveOpens) over the run.
    pub counters: Counters,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerReport {
    pub netns: u32,
    pub port: u16,
    /// Bound addresses, comma-separated; null when the listener was not seen (closed before the
    /// report, in a namespace without processes).
    pub addr: Option<String>,
    pub syn_received: u64,
    pub handshakes: u64,
    pub accepted: u64,
    /// Processes that accepted connections, busiest first.
    pub acceptors: Vec<Acceptor>,
    pub handshake_us: LatencySummary,
    pub accept_wait_us: LatencySummary,
    pub syn_to_accept_us: LatencySummary,
    /// After accept(), for connections accepted while tracing that answered (the first request
    /// of a keep-alive connection only): accept -> the first read that returned bytes (the
    /// hand-off to the handler), that read -> the first response byte (the handler), and SYN
    /// -> first response byte. Null where the phases are not traced (`--phases none`, or no
    /// hook on this kernel).
    pub read_wait_us: Option<LatencySummary>,
    pub service_us: Option<LatencySummary>,
    pub syn_to_first_byte_us: Option<LatencySummary>,
    /// Connections that sent their first response byte while traced; of them, those whose
    /// server spoke before reading (no service time). Null where the phases are not traced.
    pub first_responses: Option<u64>,
    pub responded_unasked: Option<u64>,
    pub drops: Drops,
    #[serde(flatten)]
    pub cookies: Cookies,
    /// Connections whose SYN created the child at once (TCP Fast Open); null where no hook
    /// observes them (tracepoints).
    pub fastopen: Option<u64>,
    /// SYN-ACKs this listener sent again; null where no hook observes them.
    pub synack_retransmits: Option<u64>,
    /// Handshakes abandoned after the last SYN-ACK retry: no hook observes them yet.
    pub request_timeouts: Option<u64>,
    /// The accept-queue limit (`sk_max_ack_backlog`: listen()'s backlog clamped by
    /// net.core.somaxconn).
    pub backlog: Option<u32>,
    /// The longest the accept queue got during the run.
    pub accept_queue_max: Option<u32>,
    /// The most pending handshakes seen, sampled each time a child was queued.
    pub syn_queue_max: Option<u32>,
    /// Handshakes completed while tracing whose connection no accept() had returned when the
    /// report was made. `accept_wait_us` counts accepted connections only: these waited at
    /// least as long as `oldest_wait_us` says for the first of them.
    pub never_accepted: NeverAccepted,
    /// Children whose client left while they waited in the accept queue; null where the
    /// handshake stage is not observed.
    pub abandoned_in_queue: Option<AbandonedInQueue>,
    /// The verdict: where the time from SYN to accept() went on this port.
    pub bottleneck: Bottleneck,
    /// Who accepted, in how many threads and batches, and the accept loop's longest absence.
    pub accept_loop: AcceptLoopReport,
    /// The listening sockets of this port, as sock_diag saw them.
    pub sockets: Vec<ListenerSocket>,
    /// When SO_REUSEPORT members sharing an address fare differently: one drops while another
    /// has room. Null otherwise.
    pub reuseport_imbalance: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NeverAccepted {
    /// Still in the accept queue at the report.
    pub count: u64,
    /// How long the first of them had waited by then; null without any.
    pub oldest_wait_us: Option<f64>,
    /// Discarded unaccepted when their listener closed during tracing.
    pub discarded_at_close: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonedInQueue {
    /// The client's FIN arrived while the child waited (it gave up or timed out).
    pub by_fin: u64,
    /// The client's RST arrived while the child waited.
    pub by_rst: u64,
    /// Of those, accepted later: the server served a connection nobody waited for.
    pub accepted_later: u64,
}

/// Which phase of the server-side time to first byte holds most of the p99, and what that
/// means.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// `kernel_handshake` (SYN to handshake complete), `accept_queue` (waiting for
    /// accept()), `hand_off` (accept to the first read of the request), `handler` (that read
    /// to the first response byte), `none` (every traced phase quick), or `unknown` (no
    /// connection completed its handshake while tracing).
    pub phase: String,
    /// That phase's p99 (for the accept queue, never-accepted waits count), and its share of
    /// the traced phases' p99s together; null for `none` and `unknown`.
    pub p99_us: Option<f64>,
    pub share: Option<f64>,
    /// The figures that show it, as sentences.
    pub evidence: Vec<String>,
    /// What it means for the server and what to do.
    pub meaning: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Acceptor {
    pub pid: u32,
    pub comm: String,
    pub accepted: u64,
    /// Threads of this process that accepted.
    pub threads: u64,
    /// Its cgroup path, and the Kubernetes pod UID and container ID when the path carries
    /// them; null when unknown (the process was gone before synscope looked).
    pub cgroup: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// How the listener's connections were accepted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AcceptLoopReport {
    /// Accepting processes and threads.
    pub processes: u64,
    pub threads: u64,
    /// Accepts per wake-up of a thread's accept loop (accepts less than 100 µs apart), on
    /// average and at most; null without accepts.
    pub mean_batch: Option<f64>,
    pub largest_batch: Option<u64>,
    /// The longest the accept queue held connections while nobody accepted (up to the
    /// report for connections still waiting); null without queued connections.
    pub longest_absence_us: Option<f64>,
}

/// One listening socket of the port: several with SO_REUSEPORT (each with its own queue), or
/// an IPv4 and an IPv6 socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSocket {
    pub inode: u32,
    pub addr: Option<String>,
    /// Null for a socket that opened and closed between two polls.
    pub backlog: Option<u32>,
    /// The longest its accept queue was at a poll (every second).
    pub accept_queue_max: u32,
    /// Its own drop counter over the run.
    pub drops: u64,
}

/// Count and percentiles of one distribution, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    /// The percentile spectrum: `[percentile, value]` pairs from 0 to 100 (the HTML report's
    /// plots); empty without samples.
    #[serde(default)]
    pub spectrum: Vec<[f64; 2]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Accept queue full, at SYN or final-ACK time (`TcpExtListenOverflows`).
    pub listen_overflows: Option<u64>,
    /// Of those, final ACKs that found the accept queue full (one event each, 6.15+).
    pub listen_overflows_at_ack: Option<u64>,
    /// SYN dropped because the SYN queue was full and syncookies were off
    /// (`TcpExtTCPReqQFullDrop`).
    pub syn_queue_full: Option<u64>,
    /// All drops on this listener (`TcpExtListenDrops`).
    pub listen_drops: Option<u64>,
    /// How the figures were obtained: `exact`, or why some are missing.
    pub attribution: Cow<'static, str>,
}

/// SYN cookies of one listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookies {
    /// SYN-ACKs sent with a cookie instead of a SYN-queue entry (`TcpExtSyncookiesSent`).
    pub syncookies_sent: Option<u64>,
    /// Final ACKs whose cookie did not check out (`TcpExtSyncookiesFailed`).
    pub syncookies_failed: Option<u64>,
}

/// Sysctls that size and guard the listen queues, as the namespace sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctls {
    pub somaxconn: Option<u32>,
    pub tcp_max_syn_backlog: Option<u32>,
    pub tcp_syncookies: Option<u32>,
    pub tcp_abort_on_overflow: Option<u32>,
}

/// Counter name -> value.
pub type Counters = BTreeMap<String, u64>;

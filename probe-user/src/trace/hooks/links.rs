//! The attached programs' links, detached all at once when tracing ends.
//!
//! Detaching waits on the kernel: removing a kprobe, a trampoline or a tracepoint probe waits
//! for an RCU grace period, tens of milliseconds each (several times that under emulation).
//! One after the other, the waits of twenty links made synscope take more than a second to
//! exit; dropped from threads of their own, they overlap.

use aya::{
    Ebpf,
    programs::{
        BtfTracePoint, FEntry, FExit, KProbe, TracePoint, fentry::FEntryLinkId, fexit::FExitLinkId,
        kprobe::KProbeLinkId, tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId,
    },
};

/// One link, by the program that made it.
#[derive(Debug)]
pub enum LinkId {
    FEntry(FEntryLinkId),
    FExit(FExitLinkId),
    KProbe(KProbeLinkId),
    BtfTracePoint(BtfTracePointLinkId),
    TracePoint(TracePointLinkId),
}

/// Every link attached, with its program's name.
#[derive(Debug, Default)]
pub struct Links(Vec<(&'static str, LinkId)>);

/// A link taken from its program: dropping it detaches it.
type OwnedLink = Box<dyn Send>;

impl Links {
    pub fn add(&mut self, program: &'static str, link: LinkId) {
        self.0.push((program, link));
    }

    /// The programs attached, each once.
    pub fn programs(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.0.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Detaches every link still attached, concurrently; the programs stay loaded until `ebpf`
    /// drops. A link whose program was unloaded meanwhile is already gone.
    pub fn detach_all(&mut self, ebpf: &mut Ebpf) {
        let owned: Vec<OwnedLink> = self
            .0
            .drain(..)
            .filter_map(|(name, id)| take(ebpf, name, id))
            .collect();
        std::thread::scope(|scope| {
            for link in owned {
                // A thread that cannot start leaves its link to be dropped here, in turn.
                let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(link));
            }
        });
    }
}

fn take(ebpf: &mut Ebpf, name: &str, id: LinkId) -> Option<OwnedLink> {
    let program = ebpf.program_mut(name)?;
    let owned: OwnedLink = match id {
        LinkId::FEntry(id) => Box::new(<&mut FEntry>::try_from(program).ok()?.take_link(id).ok()?),
        LinkId::FExit(id) => Box::new(<&mut FExit>::try_from(program).ok()?.take_link(id).ok()?),
        LinkId::KProbe(id) => Box::new(<&mut KProbe>::try_from(program).ok()?.take_link(id).ok()?),
        LinkId::BtfTracePoint(id) => Box::new(
            <&mut BtfTracePoint>::try_from(program)
                .ok()?
                .take_link(id)
                .ok()?,
        ),
        LinkId::TracePoint(id) => Box::new(
            <&mut TracePoint>::try_from(program)
                .ok()?
                .take_link(id)
                .ok()?,
        ),
    };
    Some(owned)
}

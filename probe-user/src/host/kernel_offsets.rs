//! The struct member offsets the kernel programs need, resolved from the running kernel's BTF.

use anyhow::Context as _;
use probe_common::{
    COUNTED_MIB_NAMES, COUNTED_MIBS, FexitReturnSlots, IoUringOffsets, KernelOffsets,
    ListenCounters,
};

use super::{btf::Btf, kallsyms::Kallsyms};

/// Resolves every offset in [`KernelOffsets`]; fails naming the first member this kernel lacks.
pub fn resolve(btf: &Btf) -> anyhow::Result<KernelOffsets> {
    let sock = |path: &str| btf.member_offset("sock", path);
    let offsets = KernelOffsets {
        skb_head: btf.member_offset("sk_buff", "head")?,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        skb_transport_header: btf.member_offset("sk_buff", "transport_header")?,
        skb_dev: btf.member_offset("sk_buff", "dev")?,
        skb_refdst: btf.member_offset("sk_buff", "_skb_refdst")?,
        dst_dev: btf.member_offset("dst_entry", "dev")?,
        netdev_net: btf.member_offset("net_device", "nd_net.net")?,
        net_inum: btf.member_offset("net", "ns.inum")?,
        sk_net: sock("__sk_common.skc_net.net")?,
        sk_family: sock("__sk_common.skc_family")?,
        sk_num: sock("__sk_common.skc_num")?,
        sk_dport: sock("__sk_common.skc_dport")?,
        sk_rcv_saddr: sock("__sk_common.skc_rcv_saddr")?,
        sk_daddr: sock("__sk_common.skc_daddr")?,
        sk_v6_rcv_saddr: sock("__sk_common.skc_v6_rcv_saddr")
            .context("this kernel was built without IPv6")?,
        sk_v6_daddr: sock("__sk_common.skc_v6_daddr")?,
        sk_protocol: sock("sk_protocol")?,
        sk_state: sock("__sk_common.skc_state")?,
        sk_ack_backlog: sock("sk_ack_backlog")?,
        sk_max_ack_backlog: sock("sk_max_ack_backlog")?,
        icsk_syn_queue_len: btf.member_offset("inet_connection_sock", "icsk_accept_queue.qlen")?,
        sk_socket: sock("sk_socket")?,
        sk_drops: sock("sk_drops")?,
        socket_inode: btf
            .member_offset("socket_alloc", "vfs_inode")?
            .checked_sub(btf.member_offset("socket_alloc", "socket")?)
            .context("socket_alloc's inode comes before its socket in this kernel's BTF")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        socket_sk: btf.member_offset("socket", "sk")?,
    };
    // The programs read the start of sock_common whole (see probe_common::SockHead).
    if let Some((member, offset)) = offsets.sock_layout_mismatch() {
        anyhow::bail!(
            "this kernel's struct sock_common has {member} at byte {offset}, a layout synscope does not know"
        );
    }
    Ok(offsets)
}

/// Where the namespace's listen counters live on this kernel: the per-CPU offset table, the
/// counter block in `struct net`, and each counter's index (they move between versions).
pub fn listen_counters(btf: &Btf, symbols: &Kallsyms) -> anyhow::Result<ListenCounters> {
    Ok(ListenCounters {
        per_cpu_offsets: symbols.data_address("__per_cpu_offset")?,
        ..listen_counter_layout(btf)?
    })
}

/// The part of [`listen_counters`] that BTF gives.
fn listen_counter_layout(btf: &Btf) -> anyhow::Result<ListenCounters> {
    let mut indices = [0u32; COUNTED_MIBS];
    for (index, name) in indices.iter_mut().zip(COUNTED_MIB_NAMES) {
        *index = btf
            .enumerator(name)
            .and_then(|v| u32::try_from(v).context("negative MIB index"))?;
    }
    Ok(ListenCounters {
        per_cpu_offsets: 0,
        net_statistics: btf.member_offset("net", "mib.net_statistics")?,
        indices,
        // rsk_listener is a macro for this member.
        request_listener: btf.member_offset("request_sock", "__req_common.skc_listener")?,
    })
}

/// Where io_uring requests keep opcode and result; zeros (which the program takes as "none")
/// on kernels built without io_uring.
/// Where the io_uring_complete tracepoint's request keeps what an accept needs. Before 5.19
/// the tracepoint does not pass the request at all (its second argument is the user data), and
/// these members are missing: then io_uring accepts are not observable through tracepoints.
pub fn io_uring(btf: &Btf) -> anyhow::Result<IoUringOffsets> {
    // The programs read the request as argument 1 (see probe-ebpf's accept.rs).
    let passes_request = btf
        .tracepoint_arg_is_pointer("io_uring_complete", 1)
        .unwrap_or(false);
    anyhow::ensure!(
        passes_request,
        "this kernel's io_uring_complete tracepoint does not pass the request (5.19+)"
    );
    Ok(IoUringOffsets {
        request_opcode: btf.member_offset("io_kiocb", "opcode")?,
        request_result: btf
            .member_offset("io_kiocb", "cqe")?
            .checked_add(btf.member_offset("io_cqe", "res")?)
            .context("io_kiocb.cqe.res is out of range in this kernel's BTF")?,
        accept_file_slot: btf.member_offset("io_accept", "file_slot")?,
        _pad: 0,
    })
}

/// `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`, or `None` on kernels before 6.15 that lack it.
/// Each fexit program's return-value slot: its function's parameter count. A function missing
/// from BTF leaves 0, and its fexit program then fails to attach, as it would anyway.
pub fn fexit_return(btf: &Btf) -> FexitReturnSlots {
    let params = |name: &str| btf.function_params(name).unwrap_or(0);
    FexitReturnSlots {
        inet_csk_listen_start: params("inet_csk_listen_start"),
        inet_csk_accept: params("inet_csk_accept"),
        tcp_rtx_synack: params("tcp_rtx_synack"),
        tcp_recvmsg: params("tcp_recvmsg"),
    }
}

pub fn listen_overflow_reason(btf: &Btf) -> Option<u32> {
    btf.enum_value("skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
        .ok()
        .and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (world-readable) has every member the programs read.
    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let Ok(btf) = Btf::from_kernel() else {
            panic!("this machine has no /sys/kernel/btf/vmlinux");
        };
        let offsets = resolve(&btf).unwrap();
        // sock_common sits at the start of sock; its family comes before the state.
        assert_eq!(offsets.sock_layout_mismatch(), None);
        assert_eq!((offsets.sk_family, offsets.sk_state), (16, 18));
        assert!(offsets.sk_ack_backlog > offsets.sk_state);
        assert_ne!(offsets.skb_head, offsets.skb_dev);
    }

    /// A kernel whose sock_common moved is refused, naming the member.
    #[test]
    fn a_moved_sock_common_member_is_named() {
        let btf = Btf::from_kernel().unwrap();
        let mut offsets = resolve(&btf).unwrap();
        offsets.sk_v6_rcv_saddr += 4;
        assert_eq!(
            offsets.sock_layout_mismatch(),
            Some(("skc_v6_rcv_saddr", offsets.sk_v6_rcv_saddr))
        );
        offsets.sk_num = 12;
        assert_eq!(offsets.sock_layout_mismatch(), Some(("skc_num", 12)));
    }

    /// What the listen_drops and io_uring programs need from BTF, on this kernel.
    #[test]
    fn listen_counters_and_io_uring_resolve_on_this_kernel() {
        let btf = Btf::from_kernel().unwrap();
        let layout = listen_counter_layout(&btf).unwrap();
        // ListenDrops is counted right after ListenOverflows in every version.
        assert_eq!(layout.indices[0], layout.indices[1] + 1);
        assert!(layout.indices.iter().all(|&i| i > 0));
        assert!(layout.request_listener > 0 && layout.net_statistics > 0);
        let io_uring = io_uring(&btf).unwrap();
        assert!(io_uring.request_opcode > 0 && io_uring.request_result > 0);
    }
}

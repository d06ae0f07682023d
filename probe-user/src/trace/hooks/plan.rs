//! The hook plan as data: for each stage, the programs that can observe it, best first.

use super::{Attach, Candidate, Extra, HookKind, ProgramSpec, Stage};

/// A candidate made of one program.
macro_rules! one {
    ($kind:expr, $label:expr, $program:expr, $attach:expr $(,)?) => {
        Candidate {
            kind: $kind,
            label: $label,
            programs: &[ProgramSpec {
                program: $program,
                attach: $attach,
            }],
            extra: None,
        }
    };
}

/// Candidates per stage, best first.
pub const PLAN: &[(Stage, &[Candidate])] = &[
    (
        Stage::Syn,
        &[
            one!(
                HookKind::Fentry,
                "fentry/tcp_conn_request",
                "syn_fentry",
                Attach::FEntry {
                    function: "tcp_conn_request",
                }
            ),
            one!(
                HookKind::Kprobe,
                "kprobe/tcp_conn_request",
                "syn_kprobe",
                Attach::KProbe {
                    function: "tcp_conn_request",
                }
            ),
            one!(
                HookKind::Tracepoint,
                "tp_btf/consume_skb",
                "syn_consume_skb",
                Attach::BtfTracePoint {
                    event: "consume_skb",
                }
            ),
            // Before 6.3 consume_skb has no location argument: the caller is found on the
            // stack, for SYNs only.
            one!(
                HookKind::Tracepoint,
                "tp_btf/consume_skb(stack)",
                "syn_consume_skb_stack",
                Attach::BtfTracePoint {
                    event: "consume_skb",
                }
            ),
        ],
    ),
    (
        Stage::Handshake,
        &[
            Candidate {
                kind: HookKind::Fentry,
                label: "fentry/tcp_set_state+fexit/inet_csk_listen_start",
                programs: &[
                    ProgramSpec {
                        program: "handshake_fentry_set_state",
                        attach: Attach::FEntry {
                            function: "tcp_set_state",
                        },
                    },
                    ProgramSpec {
                        program: "handshake_fexit_listen_start",
                        attach: Attach::FExit {
                            function: "inet_csk_listen_start",
                        },
                    },
                ],
                extra: None,
            },
            Candidate {
                kind: HookKind::Kprobe,
                label: "kprobe/tcp_set_state+kretprobe/inet_csk_listen_start",
                programs: &[
                    ProgramSpec {
                        program: "handshake_kprobe_set_state",
                        attach: Attach::KProbe {
                            function: "tcp_set_state",
                        },
                    },
                    ProgramSpec {
                        program: "handshake_kprobe_listen_start",
                        attach: Attach::KProbe {
                            function: "inet_csk_listen_start",
                        },
                    },
                    ProgramSpec {
                        program: "handshake_kretprobe_listen_start",
                        attach: Attach::KProbe {
                            function: "inet_csk_listen_start",
                        },
                    },
                ],
                extra: None,
            },
            one!(
                HookKind::Tracepoint,
                "tp_btf/inet_sock_set_state",
                "handshake_set_state",
                Attach::BtfTracePoint {
                    event: "inet_sock_set_state",
                },
            ),
        ],
    ),
    (
        Stage::Accept,
        &[
            one!(
                HookKind::Fentry,
                "fexit/inet_csk_accept",
                "accept_fexit",
                Attach::FExit {
                    function: "inet_csk_accept",
                }
            ),
            // Where accept() grafts the child: a kprobe, which a pool of threads sleeping in
            // accept() cannot exhaust as it does a kretprobe's instances (see accept.rs).
            one!(
                HookKind::Kprobe,
                "kprobe/security_sock_graft",
                "accept_kprobe_graft",
                Attach::KProbe {
                    function: "security_sock_graft",
                }
            ),
            one!(
                HookKind::Kprobe,
                "kretprobe/inet_csk_accept",
                "accept_kretprobe",
                Attach::KProbe {
                    function: "inet_csk_accept",
                }
            ),
            Candidate {
                kind: HookKind::Tracepoint,
                label: "tracepoint/syscalls:sys_exit_accept{,4}",
                programs: &[
                    ProgramSpec {
                        program: "accept_exit_accept4",
                        attach: Attach::TracePoint {
                            category: "syscalls",
                            name: "sys_exit_accept4",
                        },
                    },
                    ProgramSpec {
                        program: "accept_exit_accept",
                        attach: Attach::TracePoint {
                            category: "syscalls",
                            name: "sys_exit_accept",
                        },
                    },
                ],
                // io_uring accepts bypass the system calls (kernels without io_uring lack it).
                extra: Some(Extra {
                    label: super::IO_URING_EXTRA,
                    program: ProgramSpec {
                        program: "accept_io_uring_complete",
                        attach: Attach::BtfTracePoint {
                            event: "io_uring_complete",
                        },
                    },
                }),
            },
        ],
    ),
    (
        Stage::ListenerDiscards,
        &[one!(
            HookKind::Tracepoint,
            "tp_btf/kfree_skb",
            "listener_discards_kfree_skb",
            Attach::BtfTracePoint { event: "kfree_skb" }
        )],
    ),
    (
        Stage::ListenDrops,
        // Nothing fires when a listener drops a SYN: no tracepoint can see this stage.
        &[
            Candidate {
                kind: HookKind::Fentry,
                label: "fentry+fexit/tcp_conn_request,tcp_check_req,cookie_v{4,6}_check,tcp_req_err",
                programs: &[
                    ProgramSpec {
                        program: "listen_drops_fentry_conn_request",
                        attach: Attach::FEntry {
                            function: "tcp_conn_request",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fexit_conn_request",
                        attach: Attach::FExit {
                            function: "tcp_conn_request",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fentry_check_req",
                        attach: Attach::FEntry {
                            function: "tcp_check_req",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fexit_check_req",
                        attach: Attach::FExit {
                            function: "tcp_check_req",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fentry_cookie_v4",
                        attach: Attach::FEntry {
                            function: "cookie_v4_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fexit_cookie_v4",
                        attach: Attach::FExit {
                            function: "cookie_v4_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fentry_cookie_v6",
                        attach: Attach::FEntry {
                            function: "cookie_v6_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fexit_cookie_v6",
                        attach: Attach::FExit {
                            function: "cookie_v6_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fentry_req_err",
                        attach: Attach::FEntry {
                            function: "tcp_req_err",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_fexit_req_err",
                        attach: Attach::FExit {
                            function: "tcp_req_err",
                        },
                    },
                ],
                extra: None,
            },
            Candidate {
                kind: HookKind::Kprobe,
                label: "kprobe+kretprobe/tcp_conn_request,tcp_check_req,cookie_v{4,6}_check,tcp_req_err",
                programs: &[
                    ProgramSpec {
                        program: "listen_drops_kprobe_listener_arg2",
                        attach: Attach::KProbe {
                            function: "tcp_conn_request",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kretprobe_syn",
                        attach: Attach::KProbe {
                            function: "tcp_conn_request",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kprobe_listener_arg0",
                        attach: Attach::KProbe {
                            function: "tcp_check_req",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kretprobe_ack",
                        attach: Attach::KProbe {
                            function: "tcp_check_req",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kprobe_listener_arg0",
                        attach: Attach::KProbe {
                            function: "cookie_v4_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kretprobe_ack",
                        attach: Attach::KProbe {
                            function: "cookie_v4_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kprobe_listener_arg0",
                        attach: Attach::KProbe {
                            function: "cookie_v6_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kretprobe_ack",
                        attach: Attach::KProbe {
                            function: "cookie_v6_check",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kprobe_request_arg0",
                        attach: Attach::KProbe {
                            function: "tcp_req_err",
                        },
                    },
                    ProgramSpec {
                        program: "listen_drops_kretprobe_syn",
                        attach: Attach::KProbe {
                            function: "tcp_req_err",
                        },
                    },
                ],
                extra: None,
            },
        ],
    ),
    (
        Stage::SynackRetransmit,
        &[
            one!(
                HookKind::Fentry,
                "fexit/tcp_rtx_synack",
                "synack_retransmit_fexit",
                Attach::FExit {
                    function: "tcp_rtx_synack",
                }
            ),
            Candidate {
                kind: HookKind::Kprobe,
                label: "kretprobe/tcp_rtx_synack",
                programs: &[
                    ProgramSpec {
                        program: "synack_retransmit_kprobe",
                        attach: Attach::KProbe {
                            function: "tcp_rtx_synack",
                        },
                    },
                    ProgramSpec {
                        program: "synack_retransmit_kretprobe",
                        attach: Attach::KProbe {
                            function: "tcp_rtx_synack",
                        },
                    },
                ],
                extra: None,
            },
            one!(
                HookKind::Tracepoint,
                "tp_btf/tcp_retransmit_synack",
                "synack_retransmit_tracepoint",
                Attach::BtfTracePoint {
                    event: "tcp_retransmit_synack",
                },
            ),
        ],
    ),
    (
        Stage::Queues,
        &[
            one!(
                HookKind::Fentry,
                "fentry/sock_def_readable",
                "queues_fentry",
                Attach::FEntry {
                    function: "sock_def_readable",
                }
            ),
            one!(
                HookKind::Kprobe,
                "kprobe/sock_def_readable",
                "queues_kprobe",
                Attach::KProbe {
                    function: "sock_def_readable",
                }
            ),
            one!(
                HookKind::Tracepoint,
                "tp_btf/sk_data_ready",
                "queues_data_ready",
                Attach::BtfTracePoint {
                    event: "sk_data_ready",
                }
            ),
        ],
    ),
    (
        Stage::Phases,
        &[
            Candidate {
                kind: HookKind::Fentry,
                label: "fexit/tcp_recvmsg+fentry/tcp_sendmsg",
                programs: &[
                    ProgramSpec {
                        program: "phases_fexit_recvmsg",
                        attach: Attach::FExit {
                            function: "tcp_recvmsg",
                        },
                    },
                    ProgramSpec {
                        program: "phases_fentry_sendmsg",
                        attach: Attach::FEntry {
                            function: "tcp_sendmsg",
                        },
                    },
                ],
                extra: None,
            },
            // Where a receive accounts for the bytes it copied: a kprobe, which threads asleep
            // in a receive cannot exhaust as they do a kretprobe's instances (see phases.rs).
            Candidate {
                kind: HookKind::Kprobe,
                label: "kprobe/tcp_cleanup_rbuf+kprobe/tcp_sendmsg",
                programs: &[
                    ProgramSpec {
                        program: "phases_kprobe_cleanup_rbuf",
                        attach: Attach::KProbe {
                            function: "tcp_cleanup_rbuf",
                        },
                    },
                    ProgramSpec {
                        program: "phases_kprobe_sendmsg",
                        attach: Attach::KProbe {
                            function: "tcp_sendmsg",
                        },
                    },
                ],
                extra: None,
            },
            Candidate {
                kind: HookKind::Kprobe,
                label: "kretprobe/tcp_recvmsg+kprobe/tcp_sendmsg",
                programs: &[
                    ProgramSpec {
                        program: "phases_kprobe_recvmsg",
                        attach: Attach::KProbe {
                            function: "tcp_recvmsg",
                        },
                    },
                    ProgramSpec {
                        program: "phases_kretprobe_recvmsg",
                        attach: Attach::KProbe {
                            function: "tcp_recvmsg",
                        },
                    },
                    ProgramSpec {
                        program: "phases_kprobe_sendmsg",
                        attach: Attach::KProbe {
                            function: "tcp_sendmsg",
                        },
                    },
                ],
                extra: None,
            },
            // sock_recv_length and sock_send_length arrived in 6.3.
            Candidate {
                kind: HookKind::Tracepoint,
                label: "tp_btf/sock_recv_length+tp_btf/sock_send_length",
                programs: &[
                    ProgramSpec {
                        program: "phases_recv_length",
                        attach: Attach::BtfTracePoint {
                            event: "sock_recv_length",
                        },
                    },
                    ProgramSpec {
                        program: "phases_send_length",
                        attach: Attach::BtfTracePoint {
                            event: "sock_send_length",
                        },
                    },
                ],
                extra: None,
            },
        ],
    ),
];

//! What synscope reads from the kernel and the machine, outside its own programs: BTF and
//! kallsyms (to resolve offsets and addresses before load), `/proc` counters and sysctls,
//! listening sockets through sock_diag, and network namespaces.

pub mod btf;
pub mod counters;
pub mod inventory;
pub mod kallsyms;
pub mod kernel_offsets;
pub mod netns;
pub mod preflight;
pub mod processes;
pub mod sockdiag;

//! Types shared by the eBPF programs and the daemon: the keys and values of
//! every map they both read or write, and the constants they agree on.
//!
//! All structs are `#[repr(C)]`, `Copy` and free of padding, so the kernel
//! and user space see the same bytes.
#![no_std]

/// Names under which the daemon pins the maps that users may read with
/// `bpftool map dump pinned /sys/fs/bpf/lightwhale/<name>`.
pub mod pins {
    /// Directory on bpffs that contains every pinned map and program.
    pub const DIR: &str = "/sys/fs/bpf/lightwhale";
    /// [`crate::Activity`] per container slot.
    pub const ACTIVITY: &str = "activity";
    /// Container slot per host-side interface index.
    pub const INTERFACES: &str = "interfaces";
    /// [`crate::ListenKey`] entries that are steered to the holder.
    pub const LISTENERS: &str = "listeners";
    /// The socket filter that the nat table's bypass rule runs.
    pub const NAT_BYPASS: &str = "nat_bypass";
}

/// Map names as they appear in the eBPF object.
pub mod maps {
    pub const ACTIVITY: &str = "ACTIVITY";
    pub const INTERFACES: &str = "INTERFACES";
    pub const LISTENERS: &str = "LISTENERS";
    pub const HOLDER: &str = "HOLDER";
    pub const HOLDING: &str = "HOLDING";
    pub const ADDRESSES: &str = "ADDRESSES";
    pub const WAKE_REQUESTS: &str = "WAKE_REQUESTS";
    pub const ENTRY_COUNTS: &str = "ENTRY_COUNTS";
}

/// Indexes of the `ENTRY_COUNTS` array, in which the daemon keeps the number
/// of entries of the maps that are empty while no container sleeps. The
/// programs skip their lookups in a map whose count is zero, so that
/// watching awake containers costs as little as possible.
pub mod entry_counts {
    /// Entries of the `LISTENERS` map.
    pub const LISTENERS: u32 = 0;
    /// Entries of the `HOLDING` map.
    pub const HOLDING: u32 = 1;
    /// Length of the array.
    pub const LEN: u32 = 2;
}

/// Program names as they appear in the eBPF object and in `bpftool prog`.
///
/// Each fits the kernel's 15-character limit on program names, and all of
/// them start with `lw_` so leftovers are easy to find.
pub mod programs {
    /// TC program on the egress of a container's host-side veth: traffic
    /// towards the container.
    pub const COUNT_TO_CONTAINER: &str = "lw_count_rx";
    /// TC program on the ingress of a container's host-side veth: traffic
    /// sent by the container.
    pub const COUNT_FROM_CONTAINER: &str = "lw_count_tx";
    /// sk_lookup program in the host network namespace.
    pub const STEER: &str = "lw_steer";
    /// Socket filter run by an iptables rule in the nat table: matches new
    /// connections to held published addresses.
    pub const NAT_BYPASS: &str = "lw_nat_bypass";
}

/// Maximum number of containers whose activity is counted at once.
pub const MAX_CONTAINERS: u32 = 4096;
/// Maximum number of host interfaces mapped to containers.
pub const MAX_INTERFACES: u32 = 8192;
/// Maximum number of listening addresses steered to the holder.
pub const MAX_LISTENERS: u32 = 8192;
/// Index in the `HOLDER` socket map of the IPv4 listener.
pub const HOLDER_IPV4_INDEX: u32 = 0;
/// Size in bytes of the ring buffer of wake requests (a power of two and a
/// multiple of the page size).
pub const WAKE_REQUESTS_BYTES: u32 = 64 * 1024;

/// Values of the `HOLDING` map, keyed by container slot: how the TC program
/// treats new TCP connections (SYN without ACK) sent towards the
/// container's interfaces.
pub mod holding {
    /// The container is being checkpointed or restored: drop them. Clients
    /// send the SYN again after about a second.
    pub const DROP: u32 = 1;
    /// The container sleeps behind a stand-in that keeps its address: drop
    /// them and push the slot to the `WAKE_REQUESTS` ring buffer, so the
    /// daemon wakes the container before the client's next SYN.
    pub const DROP_AND_WAKE: u32 = 2;
}

/// Socket mark (`SO_MARK`) of the daemon's own connections to containers:
/// its readiness probes and the relayed connections. The TC program lets
/// their SYNs through while it drops those of clients.
pub const DAEMON_SOCKET_MARK: u32 = 0x4c57_4844;

/// IPPROTO_TCP, as carried in [`ListenKey::protocol`].
pub const PROTOCOL_TCP: u16 = 6;

/// Traffic counters of one container, the value of the `ACTIVITY` map keyed
/// by the container's slot (a `u32` that the daemon assigns and shows in
/// `lightwhale status --json`).
///
/// Each CPU has its own copy, which the daemon sums. The
/// daemon creates the entry before it maps any interface to the slot and
/// removes it when the container leaves the inventory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Packets sent to the container.
    pub rx_packets: u64,
    /// Bytes sent to the container, counted as `skb->len`.
    pub rx_bytes: u64,
    /// Packets sent by the container.
    pub tx_packets: u64,
    /// Bytes sent by the container.
    pub tx_bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet counted in
    /// either direction, or 0 when none was seen yet.
    pub last_seen_ns: u64,
}

/// A listening address of a sleeping container: the key of the `LISTENERS`
/// map, whose value is the container slot.
///
/// The sk_lookup program first looks up the packet's exact destination,
/// then the same port with `addr` 0, which stands for a port published on
/// every host address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// IPv4 address in network byte order, or 0 for every address.
    pub addr: u32,
    /// Port in host byte order.
    pub port: u16,
    /// IP protocol number; only [`PROTOCOL_TCP`] is steered.
    pub protocol: u16,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are `repr(C)`, `Copy` and have no padding, so every
    // byte pattern the kernel returns is a valid value.
    unsafe impl aya::Pod for super::Activity {}
    unsafe impl aya::Pod for super::ListenKey {}
}

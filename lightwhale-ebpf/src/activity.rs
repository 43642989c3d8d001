//! Traffic counting on the host-side veth of each managed container.
//!
//! Both programs run as TC classifiers (TCX on kernels from 6.6, clsact
//! before that). They count and let the packet continue, except for new
//! TCP connections towards a container that is not ready for them, see
//! [`HOLDING`].

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    btf_maps::{HashMap, PerCpuHashMap, RingBuf},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use lightwhale_common::{
    entry_counts, holding, Activity, DAEMON_SOCKET_MARK, MAX_CONTAINERS, MAX_INTERFACES, PROTOCOL_TCP,
    WAKE_REQUESTS_BYTES,
};

use crate::entry_counts::may_have_entries;

/// Counters per container slot, one copy per CPU so that updates need no
/// atomic operations. The daemon inserts and removes entries and sums the
/// copies to decide idleness; these programs only update them.
#[btf_map]
static ACTIVITY: PerCpuHashMap<u32, Activity, { MAX_CONTAINERS as usize }> =
    PerCpuHashMap::new();

/// Container slot per host-side interface index, written by the daemon
/// whenever it attaches the programs to a container's veth.
#[btf_map]
static INTERFACES: HashMap<u32, u32, { MAX_INTERFACES as usize }> = HashMap::new();

/// Container slots whose new TCP connections are dropped, valued by one of
/// the [`holding`] modes. The daemon writes an entry for the time of a
/// checkpoint, a sleep behind a stand-in, and a restore.
///
/// During a checkpoint, Docker's NAT still forwards new connections to the
/// container, and the checkpoint would reset them. The client sends a
/// dropped SYN again after about a second. By then the daemon has removed
/// the container's conntrack entries, so the retry reaches the host's own
/// stack, where the sk_lookup program hands it to the holder. Behind a
/// stand-in, the retry reaches the restored container itself.
#[btf_map]
static HOLDING: HashMap<u32, u32, { MAX_CONTAINERS as usize }> = HashMap::new();

/// Container slot per IPv4 address (network byte order) of a container
/// whose connections are held, written by the daemon with the `HOLDING`
/// entry. A bridge floods frames for a MAC address it has not learnt yet to
/// every port, so a SYN on a container's veth is only held when it is sent
/// to that container's own address.
#[btf_map]
static ADDRESSES: HashMap<u32, u32, { MAX_CONTAINERS as usize }> = HashMap::new();

/// Slots of sleeping containers that a client tried to connect to, read by
/// the daemon, which wakes them.
#[btf_map]
static WAKE_REQUESTS: RingBuf<u32, { WAKE_REQUESTS_BYTES as usize }> = RingBuf::new();

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Offset of the next-header field of an IPv6 header behind Ethernet.
const IPV6_NEXT_HEADER_OFFSET: usize = 14 + 6;
const IPPROTO_ICMPV6: u8 = 58;
/// Offsets behind Ethernet of the IPv4 version/IHL byte and protocol field.
const IPV4_IHL_OFFSET: usize = 14;
const IPV4_PROTOCOL_OFFSET: usize = 14 + 9;
const IPV4_DESTINATION_OFFSET: usize = 14 + 16;
/// Offset of the flags byte within a TCP header, and its SYN and ACK bits.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Egress of the host-side veth: packets on their way into the container.
#[classifier]
pub fn lw_count_rx(ctx: TcContext) -> i32 {
    let Some(slot) = container_slot(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    if may_have_entries(entry_counts::HOLDING) {
        // SAFETY: the value is copied out at once.
        if let Some(mode) = unsafe { HOLDING.get(slot) }.copied() {
            if is_held_syn(&ctx, slot) {
                if mode == holding::DROP_AND_WAKE {
                    // A full ring buffer loses the request, and the next
                    // SYN of the client sends it again.
                    let _ = WAKE_REQUESTS.output(slot, 0);
                }
                return TC_ACT_SHOT;
            }
        }
    }
    count(&ctx, slot, Direction::ToContainer);
    TC_ACT_UNSPEC
}

/// Ingress of the host-side veth: packets the container sent.
#[classifier]
pub fn lw_count_tx(ctx: TcContext) -> i32 {
    if let Some(slot) = container_slot(&ctx) {
        count(&ctx, slot, Direction::FromContainer);
    }
    TC_ACT_UNSPEC
}

enum Direction {
    ToContainer,
    FromContainer,
}

#[inline(always)]
fn count(ctx: &TcContext, slot: u32, direction: Direction) {
    if !is_workload_traffic(ctx) {
        return;
    }
    let Some(activity) = ACTIVITY.get_ptr_mut(slot) else {
        return;
    };

    let bytes = u64::from(ctx.len());
    // SAFETY: the pointer comes from a lookup in a per-CPU map, so only
    // this CPU writes to it, and programs do not migrate between CPUs.
    let activity = unsafe { &mut *activity };
    match direction {
        Direction::ToContainer => {
            activity.rx_packets += 1;
            activity.rx_bytes += bytes;
        }
        Direction::FromContainer => {
            activity.tx_packets += 1;
            activity.tx_bytes += bytes;
        }
    }
    // SAFETY: a helper without arguments.
    activity.last_seen_ns = unsafe { bpf_ktime_get_ns() };
}

/// Returns the slot of the container behind the interface the packet
/// crosses.
#[inline(always)]
fn container_slot(ctx: &TcContext) -> Option<u32> {
    // SAFETY: `skb` points at the context the kernel passed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is copied out at once.
    unsafe { INTERFACES.get(ifindex) }.copied()
}

/// Returns whether the packet is a client's SYN to one of the slot's held
/// addresses. The daemon's own connections, marked with
/// [`DAEMON_SOCKET_MARK`], pass.
#[inline(always)]
fn is_held_syn(ctx: &TcContext, slot: u32) -> bool {
    // SAFETY: `skb` points at the context the kernel passed to this program.
    if unsafe { (*ctx.skb.skb).mark } == DAEMON_SOCKET_MARK || !is_ipv4_tcp_syn(ctx) {
        return false;
    }
    let Ok(destination) = ctx.load::<u32>(IPV4_DESTINATION_OFFSET) else {
        return false;
    };
    // SAFETY: the value is copied out at once.
    unsafe { ADDRESSES.get(destination) }.copied() == Some(slot)
}

/// Returns whether the packet opens a TCP connection over IPv4: SYN set,
/// ACK clear.
#[inline(always)]
fn is_ipv4_tcp_syn(ctx: &TcContext) -> bool {
    // SAFETY: `skb` points at the context the kernel passed to this program.
    let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    if ethertype != ETH_P_IP {
        return false;
    }
    let Ok(protocol) = ctx.load::<u8>(IPV4_PROTOCOL_OFFSET) else {
        return false;
    };
    if u16::from(protocol) != PROTOCOL_TCP {
        return false;
    }
    let Ok(version_ihl) = ctx.load::<u8>(IPV4_IHL_OFFSET) else {
        return false;
    };
    let header_length = usize::from(version_ihl & 0x0f) * 4;
    match ctx.load::<u8>(IPV4_IHL_OFFSET + header_length + TCP_FLAGS_OFFSET) {
        Ok(flags) => flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
        Err(_) => false,
    }
}

/// Returns whether a packet shows that someone uses the container: a
/// unicast IPv4 packet, or a unicast IPv6 packet other than ICMPv6. ARP,
/// IPv6 neighbour discovery and frames to every port of the bridge, such as
/// broadcasts and the multicast traffic of other containers, keep flowing
/// while no client uses the container, so they must not keep it awake.
#[inline(always)]
fn is_workload_traffic(ctx: &TcContext) -> bool {
    // The group bit of the destination MAC address marks broadcast and
    // multicast frames.
    match ctx.load::<u8>(0) {
        Ok(first_octet) if first_octet & 1 == 0 => {}
        _ => return false,
    }
    // SAFETY: `skb` points at the context the kernel passed to this program.
    let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    match ethertype {
        ETH_P_IP => true,
        ETH_P_IPV6 => match ctx.load::<u8>(IPV6_NEXT_HEADER_OFFSET) {
            Ok(next_header) => next_header != IPPROTO_ICMPV6,
            Err(_) => false,
        },
        _ => false,
    }
}

//! Traffic counting on the host-side veth of each managed container.
//!
//! Both programs run as TC classifiers (TCX on kernels from 6.6, clsact
//! before that) and only count: they always let the packet continue.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    btf_maps::{HashMap, PerCpuHashMap},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use lightwhale_common::{Activity, MAX_CONTAINERS, MAX_INTERFACES};

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

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Offset of the next-header field of an IPv6 header behind Ethernet.
const IPV6_NEXT_HEADER_OFFSET: usize = 14 + 6;
const IPPROTO_ICMPV6: u8 = 58;

/// Egress of the host-side veth: packets on their way into the container.
#[classifier]
pub fn lw_count_rx(ctx: TcContext) -> i32 {
    count(&ctx, Direction::ToContainer);
    TC_ACT_UNSPEC
}

/// Ingress of the host-side veth: packets the container sent.
#[classifier]
pub fn lw_count_tx(ctx: TcContext) -> i32 {
    count(&ctx, Direction::FromContainer);
    TC_ACT_UNSPEC
}

enum Direction {
    ToContainer,
    FromContainer,
}

#[inline(always)]
fn count(ctx: &TcContext, direction: Direction) {
    if !is_workload_traffic(ctx) {
        return;
    }

    // SAFETY: `skb` points at the context the kernel passed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(slot) = (unsafe { INTERFACES.get(ifindex) }).copied() else {
        return;
    };
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

/// Returns whether a packet shows that someone uses the container: any IPv4
/// packet, and IPv6 packets other than ICMPv6. ARP and IPv6 neighbour
/// discovery keep flowing while nobody talks to the container, so they must
/// not keep it awake.
#[inline(always)]
fn is_workload_traffic(ctx: &TcContext) -> bool {
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

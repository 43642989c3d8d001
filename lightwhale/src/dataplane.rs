//! The eBPF side seen from user space: loading and attaching the programs,
//! and reading and writing their maps.

use std::{
    collections::{HashMap as StdHashMap, HashSet as StdHashSet},
    fs,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuHashMap, PerCpuValues, RingBuf, SockMap},
    programs::{
        tc::{self, SchedClassifierLinkId, TcAttachType},
        SchedClassifier, SkLookup, SocketFilter,
    },
    util::nr_cpus,
    Ebpf,
};
use lightwhale_common::{entry_counts, maps, pins, programs, Activity, ListenKey, HOLDER_IPV4_INDEX, PROTOCOL_TCP};
use thiserror::Error;
use tracing::{debug, warn};

use crate::docker::PublishedPort;

/// Errors of the data plane.
#[derive(Debug, Error)]
pub enum DataPlaneError {
    /// Loading or verifying the eBPF object failed.
    #[error("cannot load the eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be attached or detached.
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// A map is missing from the object.
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    /// A file operation on bpffs failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The interface index has no name (it vanished).
    #[error("interface {0} not found")]
    NoInterface(u32),
}

/// The loaded programs and their maps.
pub struct DataPlane {
    /// Owns the programs; dropping it detaches every link.
    ebpf: Ebpf,
    /// Per-container traffic counters.
    activity: PerCpuHashMap<MapData, u32, Activity>,
    /// Host interface index to container slot.
    interfaces: HashMap<MapData, u32, u32>,
    /// Published addresses steered to the holder.
    listeners: HashMap<MapData, ListenKey, u32>,
    /// The holder's listening socket.
    holder: SockMap<MapData>,
    /// Slots whose new TCP connections are dropped, with a
    /// [`lightwhale_common::holding`] mode.
    holding: HashMap<MapData, u32, u32>,
    /// Slot per held container address.
    addresses: HashMap<MapData, u32, u32>,
    /// Entry counts of `listeners` and `holding`, which let the programs
    /// skip those maps while they are empty.
    entry_counts: Array<MapData, u32>,
    /// Keys in `listeners`, mirrored to count them.
    listener_keys: StdHashSet<ListenKey>,
    /// Slots in `holding`, mirrored to count them.
    holding_slots: StdHashSet<u32>,
    /// Wake requests from the TC program, until the daemon takes them.
    wake_requests: Option<RingBuf<MapData>>,
    /// TC links per host interface index: egress then ingress.
    tc_links: StdHashMap<u32, [SchedClassifierLinkId; 2]>,
    /// Pinned map files, removed on drop.
    pinned: Vec<PathBuf>,
    /// Number of possible CPUs, the length of per-CPU values.
    cpus: usize,
}

impl DataPlane {
    /// Loads the programs, pins the maps under [`pins::DIR`] and attaches the
    /// sk_lookup program to the current network namespace.
    pub fn load() -> Result<Self, DataPlaneError> {
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lightwhale")))?;

        for name in [programs::COUNT_TO_CONTAINER, programs::COUNT_FROM_CONTAINER] {
            let program: &mut SchedClassifier = program(&mut ebpf, name)?;
            program.load().map_err(|source| DataPlaneError::Program { name: static_name(name), source })?;
        }
        let steer: &mut SkLookup = program(&mut ebpf, programs::STEER)?;
        steer.load().map_err(|source| DataPlaneError::Program { name: programs::STEER, source })?;

        let pin_dir = Path::new(pins::DIR);
        prepare_pin_dir(pin_dir)?;
        let mut pinned = Vec::new();

        // iptables finds the program by its pin.
        let nat_bypass: &mut SocketFilter = program(&mut ebpf, programs::NAT_BYPASS)?;
        nat_bypass
            .load()
            .map_err(|source| DataPlaneError::Program { name: programs::NAT_BYPASS, source })?;
        let path = pin_dir.join(pins::NAT_BYPASS);
        nat_bypass.pin(&path).map_err(|error| DataPlaneError::Io {
            path: path.clone(),
            source: io::Error::other(error.to_string()),
        })?;
        pinned.push(path);
        let mut take = |map_name: &'static str, pin_name: Option<&str>| {
            let map = ebpf.take_map(map_name).ok_or(DataPlaneError::MissingMap(map_name))?;
            if let Some(pin_name) = pin_name {
                let path = pin_dir.join(pin_name);
                map.pin(&path).map_err(|error| DataPlaneError::Io {
                    path: path.clone(),
                    source: io::Error::other(error.to_string()),
                })?;
                pinned.push(path);
            }
            Ok::<_, DataPlaneError>(map)
        };
        let activity = take(maps::ACTIVITY, Some(pins::ACTIVITY))?;
        let interfaces = take(maps::INTERFACES, Some(pins::INTERFACES))?;
        let listeners = take(maps::LISTENERS, Some(pins::LISTENERS))?;
        let holder = take(maps::HOLDER, None)?;
        let holding = take(maps::HOLDING, None)?;
        let addresses = take(maps::ADDRESSES, None)?;
        let wake_requests = take(maps::WAKE_REQUESTS, None)?;
        let entry_counts = take(maps::ENTRY_COUNTS, None)?;

        let map_error = |name| move |source| DataPlaneError::Map { name, source };
        let mut data_plane = Self {
            activity: PerCpuHashMap::try_from(activity).map_err(map_error(maps::ACTIVITY))?,
            interfaces: HashMap::try_from(interfaces).map_err(map_error(maps::INTERFACES))?,
            listeners: HashMap::try_from(listeners).map_err(map_error(maps::LISTENERS))?,
            holder: SockMap::try_from(holder).map_err(map_error(maps::HOLDER))?,
            holding: HashMap::try_from(holding).map_err(map_error(maps::HOLDING))?,
            addresses: HashMap::try_from(addresses).map_err(map_error(maps::ADDRESSES))?,
            wake_requests: Some(RingBuf::try_from(wake_requests).map_err(map_error(maps::WAKE_REQUESTS))?),
            entry_counts: Array::try_from(entry_counts).map_err(map_error(maps::ENTRY_COUNTS))?,
            listener_keys: StdHashSet::new(),
            holding_slots: StdHashSet::new(),
            ebpf,
            tc_links: StdHashMap::new(),
            pinned,
            cpus: nr_cpus().map_err(|(path, source)| DataPlaneError::Io { path: path.into(), source })?,
        };

        let netns = fs::File::open("/proc/self/ns/net").map_err(|source| DataPlaneError::Io {
            path: "/proc/self/ns/net".into(),
            source,
        })?;
        let steer: &mut SkLookup = program(&mut data_plane.ebpf, programs::STEER)?;
        steer
            .attach(netns)
            .map_err(|source| DataPlaneError::Program { name: programs::STEER, source })?;
        Ok(data_plane)
    }

    /// Puts the holder's IPv4 listener where the sk_lookup program finds it.
    pub fn set_holder(&mut self, listener: &impl AsRawFd) -> Result<(), DataPlaneError> {
        self.holder
            .set(HOLDER_IPV4_INDEX, listener, 0)
            .map_err(|source| DataPlaneError::Map { name: maps::HOLDER, source })
    }

    /// Creates the zeroed counters of a container slot.
    pub fn add_container(&mut self, slot: u32) -> Result<(), DataPlaneError> {
        let zeros = PerCpuValues::try_from(vec![Activity::default(); self.cpus]).map_err(|source| {
            DataPlaneError::Io { path: pins::ACTIVITY.into(), source }
        })?;
        self.activity
            .insert(slot, zeros, 0)
            .map_err(|source| DataPlaneError::Map { name: maps::ACTIVITY, source })
    }

    /// Removes a container slot's counters and held ports.
    pub fn remove_container(&mut self, slot: u32) {
        let _ = self.activity.remove(&slot);
        let _ = self.set_holding(slot, None);
        self.release_slot(slot);
    }

    /// Returns a container's counters summed over CPUs, with the latest
    /// `last_seen_ns`.
    pub fn activity(&self, slot: u32) -> Activity {
        let Ok(values) = self.activity.get(&slot, 0) else {
            return Activity::default();
        };
        values.iter().fold(Activity::default(), |total, cpu| Activity {
            rx_packets: total.rx_packets + cpu.rx_packets,
            rx_bytes: total.rx_bytes + cpu.rx_bytes,
            tx_packets: total.tx_packets + cpu.tx_packets,
            tx_bytes: total.tx_bytes + cpu.tx_bytes,
            last_seen_ns: total.last_seen_ns.max(cpu.last_seen_ns),
        })
    }

    /// Attaches the counting programs to a container's host-side interface.
    /// Attaching an interface that is already attached does nothing.
    pub fn attach_interface(&mut self, ifindex: u32, slot: u32) -> Result<(), DataPlaneError> {
        if self.tc_links.contains_key(&ifindex) {
            return Ok(());
        }
        self.interfaces
            .insert(ifindex, slot, 0)
            .map_err(|source| DataPlaneError::Map { name: maps::INTERFACES, source })?;
        let name = interface_name(ifindex)?;

        let egress = attach_tc(&mut self.ebpf, programs::COUNT_TO_CONTAINER, &name, TcAttachType::Egress)?;
        let ingress = match attach_tc(&mut self.ebpf, programs::COUNT_FROM_CONTAINER, &name, TcAttachType::Ingress) {
            Ok(link) => link,
            Err(error) => {
                detach_tc(&mut self.ebpf, programs::COUNT_TO_CONTAINER, egress);
                return Err(error);
            }
        };
        self.tc_links.insert(ifindex, [egress, ingress]);
        debug!(ifindex, interface = %name, slot, "counting traffic");
        Ok(())
    }

    /// Detaches the counting programs from an interface, which may already
    /// be gone with its container.
    pub fn detach_interface(&mut self, ifindex: u32) {
        let _ = self.interfaces.remove(&ifindex);
        if let Some([egress, ingress]) = self.tc_links.remove(&ifindex) {
            detach_tc(&mut self.ebpf, programs::COUNT_TO_CONTAINER, egress);
            detach_tc(&mut self.ebpf, programs::COUNT_FROM_CONTAINER, ingress);
        }
    }

    /// Steers new connections to a container's published ports to the
    /// holder.
    pub fn hold_ports(&mut self, slot: u32, ports: &[PublishedPort]) -> Result<(), DataPlaneError> {
        // Counted first: a count above the entries only costs lookups, while
        // a count below them would let a held connection through.
        let keys: Vec<ListenKey> = ports.iter().map(|port| listen_key(port.host_ip, port.host_port)).collect();
        self.listener_keys.extend(keys.iter().copied());
        self.write_count(entry_counts::LISTENERS, self.listener_keys.len())?;
        for key in keys {
            self.listeners
                .insert(key, slot, 0)
                .map_err(|source| DataPlaneError::Map { name: maps::LISTENERS, source })?;
        }
        Ok(())
    }

    /// Writes the entry count of a map into `ENTRY_COUNTS`.
    fn write_count(&mut self, index: u32, count: usize) -> Result<(), DataPlaneError> {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        self.entry_counts
            .set(index, count, 0)
            .map_err(|source| DataPlaneError::Map { name: maps::ENTRY_COUNTS, source })
    }

    /// Writes the entry count of a map after entries were removed, logging
    /// a failure, which only leaves the programs doing needless lookups.
    fn write_count_after_removal(&mut self, index: u32, count: usize) {
        if let Err(error) = self.write_count(index, count) {
            warn!(%error, "cannot update the entry counts");
        }
    }

    /// Sets how new TCP connections towards a slot's interfaces are
    /// treated: one of the [`lightwhale_common::holding`] modes, or `None`
    /// to let them through.
    pub fn set_holding(&mut self, slot: u32, mode: Option<u32>) -> Result<(), DataPlaneError> {
        let result = match mode {
            Some(mode) => {
                self.holding_slots.insert(slot);
                self.write_count(entry_counts::HOLDING, self.holding_slots.len())?;
                self.holding.insert(slot, mode, 0)
            }
            None => {
                let result = match self.holding.remove(&slot) {
                    Err(error) if is_missing_key(&error) => Ok(()),
                    other => other,
                };
                if result.is_ok() && self.holding_slots.remove(&slot) {
                    self.write_count_after_removal(entry_counts::HOLDING, self.holding_slots.len());
                }
                result
            }
        };
        result.map_err(|source| DataPlaneError::Map { name: maps::HOLDING, source })
    }

    /// Records the addresses whose SYNs the `HOLDING` mode of `slot` applies
    /// to.
    pub fn hold_addresses(&mut self, slot: u32, addresses: &[Ipv4Addr]) -> Result<(), DataPlaneError> {
        for address in addresses {
            self.addresses
                .insert(u32::from_ne_bytes(address.octets()), slot, 0)
                .map_err(|source| DataPlaneError::Map { name: maps::ADDRESSES, source })?;
        }
        Ok(())
    }

    /// Forgets held addresses.
    pub fn release_addresses(&mut self, addresses: &[Ipv4Addr]) {
        for address in addresses {
            let _ = self.addresses.remove(&u32::from_ne_bytes(address.octets()));
        }
    }

    /// Hands over the ring buffer of wake requests, once.
    pub fn take_wake_requests(&mut self) -> Option<RingBuf<MapData>> {
        self.wake_requests.take()
    }

    /// Stops steering a container's ports.
    pub fn release_ports(&mut self, ports: &[PublishedPort]) {
        for port in ports {
            self.release_key(listen_key(port.host_ip, port.host_port));
        }
        self.write_count_after_removal(entry_counts::LISTENERS, self.listener_keys.len());
    }

    /// Removes one listener entry. Its count stays while the removal fails,
    /// so that the programs keep looking the entry up.
    fn release_key(&mut self, key: ListenKey) {
        match self.listeners.remove(&key) {
            Ok(()) => {
                self.listener_keys.remove(&key);
            }
            Err(error) if is_missing_key(&error) => {
                self.listener_keys.remove(&key);
            }
            Err(error) => warn!(%error, "cannot remove a listener entry"),
        }
    }

    /// Removes every listener entry of a slot.
    fn release_slot(&mut self, slot: u32) {
        let keys: Vec<ListenKey> = self
            .listeners
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, value)| *value == slot)
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.release_key(key);
        }
        self.write_count_after_removal(entry_counts::LISTENERS, self.listener_keys.len());
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        let ifindexes: Vec<u32> = self.tc_links.keys().copied().collect();
        for ifindex in ifindexes {
            self.detach_interface(ifindex);
        }
        for path in &self.pinned {
            if let Err(error) = fs::remove_file(path) {
                warn!(path = %path.display(), %error, "cannot remove a pin");
            }
        }
        let _ = fs::remove_dir(pins::DIR);
    }
}

/// Returns the key of a published address: 0.0.0.0 becomes 0, which the
/// sk_lookup program matches for every destination address.
pub fn listen_key(host_ip: Ipv4Addr, host_port: u16) -> ListenKey {
    ListenKey {
        addr: u32::from_ne_bytes(host_ip.octets()),
        port: host_port,
        protocol: PROTOCOL_TCP,
    }
}

/// Returns the listen keys that a connection to `local` may have matched:
/// its exact address first, then the any-address entry of its port.
pub fn candidate_keys(local: SocketAddrV4) -> [ListenKey; 2] {
    [
        listen_key(*local.ip(), local.port()),
        listen_key(Ipv4Addr::UNSPECIFIED, local.port()),
    ]
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, DataPlaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or_else(|| DataPlaneError::Program {
        name: static_name(name),
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    program.try_into().map_err(|source| DataPlaneError::Program { name: static_name(name), source })
}

fn static_name(name: &str) -> &'static str {
    [programs::COUNT_TO_CONTAINER, programs::COUNT_FROM_CONTAINER, programs::STEER, programs::NAT_BYPASS]
        .into_iter()
        .find(|known| *known == name)
        .unwrap_or("unknown")
}

fn attach_tc(
    ebpf: &mut Ebpf,
    name: &'static str,
    interface: &str,
    attach_type: TcAttachType,
) -> Result<SchedClassifierLinkId, DataPlaneError> {
    let program: &mut SchedClassifier = program(ebpf, name)?;
    match program.attach(interface, attach_type) {
        Ok(link) => Ok(link),
        Err(first_error) => {
            // Kernels before 6.6 have no TCX, and the netlink attachment
            // needs a clsact qdisc on the interface.
            if tc::qdisc_add_clsact(interface).is_err() {
                return Err(DataPlaneError::Program { name, source: first_error });
            }
            program
                .attach(interface, attach_type)
                .map_err(|source| DataPlaneError::Program { name, source })
        }
    }
}

/// Returns whether a map operation failed because the key was not there:
/// aya reports a missing key of a hash map either way, depending on the
/// operation.
fn is_missing_key(error: &aya::maps::MapError) -> bool {
    match error {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(error) => error.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn detach_tc(ebpf: &mut Ebpf, name: &'static str, link: SchedClassifierLinkId) {
    if let Ok(program) = program::<SchedClassifier>(ebpf, name) {
        // The link fails to detach when its interface vanished with the
        // container, which already removed the attachment.
        let _ = program.detach(link);
    }
}

fn interface_name(ifindex: u32) -> Result<String, DataPlaneError> {
    let mut buffer = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buffer.as_mut_ptr()) };
    if name.is_null() {
        return Err(DataPlaneError::NoInterface(ifindex));
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into the buffer.
    let name = unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// Makes sure the pin directory exists and contains no pins of an earlier
/// daemon that did not stop cleanly.
fn prepare_pin_dir(dir: &Path) -> Result<(), DataPlaneError> {
    let io_error = |source| DataPlaneError::Io { path: dir.to_owned(), source };
    if dir.exists() {
        for entry in fs::read_dir(dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            warn!(path = %path.display(), "removing a pin left by an earlier daemon");
            fs::remove_file(&path).map_err(|source| DataPlaneError::Io { path: path.clone(), source })?;
        }
    }
    fs::create_dir_all(dir).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_key_keeps_network_byte_order() {
        let key = listen_key(Ipv4Addr::new(127, 0, 0, 1), 8080);
        assert_eq!(key.addr.to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(key.port, 8080);
        assert_eq!(key.protocol, PROTOCOL_TCP);
    }

    #[test]
    fn candidate_keys_try_exact_then_any() {
        let [exact, any] = candidate_keys(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80));
        assert_eq!(exact.addr.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(any.addr, 0);
        assert_eq!(any.port, 80);
    }
}

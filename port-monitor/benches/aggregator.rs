//! Records a second the daemon absorbs from the ring buffer, on one core.
//!
//! For each record, `kernel::reader::drain` decodes the bytes (`kernel::decode::decode`) and
//! counts the failure in the model (`Model::apply_failure`); it also logs, at most ten lines a
//! second, which is left out here. Two benchmarks over the same batch of records:
//! - `decode`: bytes to a `Failure`, and the `Failure` dropped;
//! - `decode_and_apply`: what `drain` does, decoding the whole batch and then applying it, to a
//!   model that has already seen the batch, as in a daemon that has been running for a while.
//!
//! The batch is a full ring buffer, the most one drain can find. Goal: at least 5 million
//! records a second.
//!
//! Run with `cargo bench --package port-monitor --bench aggregator`: criterion prints
//! `thrpt: [low estimate high]` in records (elements) a second. Append `-- decode` to run only
//! the benchmarks whose name contains `decode`, or `-- --profile-time 5` to run them without
//! analysis, under a profiler.

use std::{hint::black_box, net::Ipv6Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use port_monitor::{
    kernel::decode::decode,
    model::{Model, Settings, errno},
};
use port_monitor_common::{
    FAMILY_INET, FAMILY_INET6, Operation, PROTOCOL_TCP, PROTOCOL_UDP,
    event::{
        EventKind, FAILURE_EVENT_SIZE, FLAG_AUTO_PORT, FLAG_HAS_CALLER, FLAG_HAS_CGROUP,
        FailureEvent,
    },
    maps::EVENTS_BYTE_SIZE,
};

/// `BPF_RINGBUF_HDR_SZ`: the kernel puts an 8-byte header before every ring buffer record.
const RING_HEADER_BYTES: usize = 8;

/// Records in a full ring buffer (10,922): the largest batch one `drain` sees.
const BATCH: usize = EVENTS_BYTE_SIZE as usize / (RING_HEADER_BYTES + FAILURE_EVENT_SIZE);

/// The errno of a connect whose handshake timed out (`tcp_write_err`).
const ETIMEDOUT: u16 = 110;

/// Pod network namespaces on the node, each with two containers (cgroups).
const NAMESPACES: u32 = 40;
/// Inode number of the first pod namespace (the others follow it here).
const FIRST_NETNS: u32 = 4_026_532_000;
/// Services the pods call, each at its own address.
const DESTINATIONS: u16 = 12;
/// Namespaces whose second container scans ports (see [`kernel_records`]).
const SCANNERS: u32 = 2;
/// What the containers run, as `comm` shows it.
const COMMS: [&str; 6] = ["curl", "java", "envoy", "python3", "coredns", "nginx"];

/// A fixed pseudo-random sequence (xorshift64), so that every run measures the same batch.
struct Sequence(u64);

impl Sequence {
    /// A number below `bound`.
    fn below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        u32::try_from(self.0 % u64::from(bound)).expect("below a u32 bound")
    }
}

/// Where a pod's calls come from: its namespace, container and address.
struct Pod {
    netns: u32,
    cgroup_id: u64,
    tgid: u32,
    comm: [u8; 16],
    v4: [u8; 4],
    v6: Ipv6Addr,
}

impl Pod {
    /// Container `container` (0 or 1) of pod `index`.
    fn new(index: u32, container: u32) -> Self {
        let name = COMMS[usize::try_from(index + container).expect("small index") % COMMS.len()];
        let mut comm = [0; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        let host = u16::try_from(index + 2).expect("fewer than 65,000 pods");
        let [high, low] = host.to_be_bytes();
        Self {
            netns: FIRST_NETNS + index,
            cgroup_id: 10_000 + u64::from(index * 2 + container),
            tgid: 1_000 + index * 100 + container,
            comm,
            v4: [10, 244, high, low],
            v6: Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, host),
        }
    }

    /// A record from this container with everything a given failure does not change.
    fn event(&self, timestamp_ns: u64, v6: bool) -> FailureEvent {
        let mut local_addr = [0; 16];
        if v6 {
            local_addr = self.v6.octets();
        } else {
            local_addr[..4].copy_from_slice(&self.v4);
        }
        FailureEvent {
            kind: EventKind::Failure as u8,
            operation: Operation::Connect as u8,
            protocol: PROTOCOL_TCP,
            flags: FLAG_HAS_CALLER | FLAG_HAS_CGROUP,
            netns: self.netns,
            timestamp_ns,
            cgroup_id: self.cgroup_id,
            tgid: self.tgid,
            pid: self.tgid,
            errno: 0,
            family: if v6 { FAMILY_INET6 } else { FAMILY_INET },
            local_port: 0,
            remote_port: 0,
            local_addr,
            remote_addr: [0; 16],
            comm: self.comm,
        }
    }
}

/// Destination `index`: a service address, v4 or v6, and its port.
fn destination(index: u16, v6: bool) -> ([u8; 16], u16) {
    const PORTS: [u16; 4] = [443, 80, 5432, 6379];
    let mut address = [0; 16];
    if v6 {
        address = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 10 + index).octets();
    } else {
        address[..4].copy_from_slice(&[10, 96, 0, u8::try_from(10 + index).expect("small")]);
    }
    (address, PORTS[usize::from(index % 4)])
}

/// Makes a failure `event` what the kernel programs send when a connect is refused or times
/// out: seen in softirq (`tcp_reset`, `tcp_write_err`), so with the socket's cgroup but no
/// caller, and with the local port the connect had been given.
fn handshake_failed(event: &mut FailureEvent, errno: u16, local_port: u16) {
    event.flags = FLAG_HAS_CGROUP;
    event.errno = errno;
    event.tgid = 0;
    event.pid = 0;
    event.comm = [0; 16];
    event.local_port = local_port;
}

/// `count` records, back to back, as a node's kernel programs would send them while things go
/// wrong on it. The mix is weighted towards what fails in a tight loop, since only that makes
/// the rate high:
/// - 40% TCP connects out of ports (EADDRNOTAVAIL, source port 0, the caller known): the
///   flood port-monitor exists for, clients retrying against a few destinations;
/// - 25% refused connects (ECONNREFUSED), the port scan path: two containers scanning ports
///   1-1024 in order, and clients everywhere retrying a service that is down;
/// - 5% timed-out connects (ETIMEDOUT), counted but no anomaly: the cheapest path;
/// - 15% bind conflicts (EADDRINUSE on an explicit port): servers restarting in a loop;
/// - 15% UDP autobind failures (EAGAIN): resolvers out of UDP ports.
///
/// A quarter of the addresses are IPv6. Calls come from 40 namespaces with two containers
/// each and go to 12 destinations, so that the port scan windows, one per (namespace, cgroup)
/// that saw a refusal, number as they would on a busy node (42). Timestamps are 10 µs apart:
/// 100,000 records a second, all inside one port scan window.
fn kernel_records(count: usize) -> Vec<u8> {
    let mut sequence = Sequence(0x5eed_cafe_f00d_d00d);
    let mut scanned_port = 0;
    let mut records = Vec::with_capacity(count * FAILURE_EVENT_SIZE);
    for index in 0..count {
        let timestamp_ns = 3_600_000_000_000 + 10_000 * u64::try_from(index).expect("u64");
        let v6 = sequence.below(4) == 0;
        let pod = sequence.below(NAMESPACES);
        let (remote_addr, remote_port) = destination(
            u16::try_from((pod * 3 + sequence.below(3)) % u32::from(DESTINATIONS))
                .expect("below DESTINATIONS"),
            v6,
        );
        let ephemeral_port = 32_768 + u16::try_from(sequence.below(28_232)).expect("u16");
        let roll = sequence.below(100);
        let mut event = Pod::new(pod, 0).event(timestamp_ns, v6);
        event.remote_addr = remote_addr;
        event.remote_port = remote_port;
        match roll {
            0..40 => {
                event.flags |= FLAG_AUTO_PORT;
                event.errno = errno::EADDRNOTAVAIL;
            }
            40..52 => {
                let scanner = Pod::new(pod % SCANNERS, 1);
                event = scanner.event(timestamp_ns, v6);
                scanned_port = scanned_port % 1024 + 1;
                event.remote_addr = remote_addr;
                event.remote_port = scanned_port;
                handshake_failed(&mut event, errno::ECONNREFUSED, ephemeral_port);
            }
            52..65 => handshake_failed(&mut event, errno::ECONNREFUSED, ephemeral_port),
            65..70 => handshake_failed(&mut event, ETIMEDOUT, ephemeral_port),
            70..85 => {
                event = Pod::new(pod, 1).event(timestamp_ns, v6);
                event.operation = Operation::Bind as u8;
                event.errno = errno::EADDRINUSE;
                event.local_port = [8080, 9090, 8443][usize::from(remote_port % 3)];
            }
            _ => {
                event.operation = Operation::Autobind as u8;
                event.protocol = PROTOCOL_UDP;
                event.flags |= FLAG_AUTO_PORT;
                event.errno = errno::EAGAIN;
                event.local_addr = [0; 16];
                event.remote_addr = [0; 16];
                event.remote_port = 0;
            }
        }
        let record = wire_bytes(&event);
        decode(record).expect("a record the kernel programs send decodes");
        records.extend_from_slice(record);
    }
    records
}

/// The bytes of `event` as they are in the ring buffer: the kernel programs write the struct
/// there as it is (`EVENTS.reserve::<FailureEvent>` in port-monitor-ebpf's `record::send`).
fn wire_bytes(event: &FailureEvent) -> &[u8] {
    // SAFETY: `FailureEvent` is `#[repr(C)]` and `Copy` and has no padding (a test in
    // port-monitor-common checks that its size is the sum of its fields'), so all of its
    // `FAILURE_EVENT_SIZE` bytes are initialised; the slice borrows `event`.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(event).cast(), FAILURE_EVENT_SIZE) }
}

/// What `drain` does with a batch, minus the log: decode every record, then apply them.
fn absorb(records: &[u8], model: &mut Model) {
    let mut failures = Vec::new();
    for record in records.chunks_exact(FAILURE_EVENT_SIZE) {
        if let Ok(failure) = decode(record) {
            failures.push(failure);
        }
    }
    for failure in &failures {
        black_box(model.apply_failure(failure));
    }
}

fn aggregator(criterion: &mut Criterion) {
    let records = kernel_records(BATCH);
    let mut group = criterion.benchmark_group("aggregator");
    group.throughput(Throughput::Elements(
        u64::try_from(BATCH).expect("the batch fits a u64"),
    ));
    group.bench_function("decode", |bencher| {
        bencher.iter(|| {
            for record in black_box(records.as_slice()).chunks_exact(FAILURE_EVENT_SIZE) {
                let _ = black_box(decode(record));
            }
        });
    });
    // Replaying the batch repeats its timestamps, which keeps the refusals inside one port
    // scan window: the windows stay full, as they are while refusals arrive this fast.
    let mut model = Model::new(Settings::default());
    absorb(&records, &mut model);
    group.bench_function("decode_and_apply", |bencher| {
        bencher.iter(|| absorb(black_box(records.as_slice()), &mut model));
    });
    group.finish();
}

criterion_group!(benches, aggregator);
criterion_main!(benches);

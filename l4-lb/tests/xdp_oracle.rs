#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The XDP balancer program against the userspace oracle (root): the kernel runs the real
//! program (`BPF_PROG_TEST_RUN`) with the maps the balancer writes, and every output frame must
//! be byte for byte what the userspace path would send — same backend (Maglev + conntrack), same
//! outer header (`packet::encapsulate`), the backend's MAC from the neighbour table.
//!
//! One network namespace (pid in its name, deleted on drop) holds a veth pair with static
//! neighbour entries for the backends.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Instant;

use causeway_l4lb::balancer::{Decision, Tables, pick};
use causeway_l4lb::config;
use causeway_l4lb::conntrack::Conntrack;
use causeway_l4lb::packet;
use causeway_l4lb::sys;
use causeway_l4lb::xdp::{self, Mode, XdpBalancer, XdpOptions};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const LB: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, i]
}

/// An Ethernet frame carrying IPv4 (DF, TTL 64) TCP from `src:sport` to `dst:80`, `len` bytes
/// of IP packet.
fn frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + len];
    f[0..6].copy_from_slice(&mac(0xaa));
    f[6..12].copy_from_slice(&mac(0xbb));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = packet::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&80u16.to_be_bytes());
    ip[32] = 0x50;
    ip[33] = 0x02;
    f
}

#[test]
fn xdp_program_matches_the_userspace_oracle() {
    if !xdp::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "built without the XDP programs (clang missing): scripts/install-deps installs it"
        );
        eprintln!("SKIPPED: this build has no XDP programs (clang was missing)");
        return;
    }
    let ns = Netns(format!("cw-l4x-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    let n = ns.0.as_str();
    ip(&["-n", n, "link", "set", "lo", "up"]);
    // The FIB lookup of a forwarding program requires forwarding on the ingress interface.
    ip(&["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ip(&[
        "-n", n, "link", "add", "lba", "type", "veth", "peer", "name", "lbb",
    ]);
    ip(&["-n", n, "addr", "add", "10.1.0.11/24", "dev", "lba"]);
    ip(&["-n", n, "link", "set", "lba", "up"]);
    ip(&["-n", n, "link", "set", "lbb", "up"]);
    for i in 21..=23u8 {
        let m = mac(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip(&[
            "-n",
            n,
            "neigh",
            "replace",
            &format!("10.1.0.{i}"),
            "lladdr",
            &m,
            "dev",
            "lba",
            "nud",
            "permanent",
        ]);
    }
    let ifindex: u32 = ip(&["-n", n, "-o", "link", "show", "lba"])
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let name = ns.0.clone();
    std::thread::spawn(move || {
        sys::enter_netns(&name).unwrap();
        run(ifindex);
    })
    .join()
    .unwrap();
}

fn run(ifindex: u32) {
    let cfg = config::file::parse(
        r#"
vips:
  - name: web
    address: 10.9.0.10
    ports: [80]
    backends:
      - address: 10.1.0.21
      - address: 10.1.0.22
        weight: 2
      - address: 10.1.0.23
    healthCheck: {type: NONE}
"#,
    )
    .unwrap();
    let all = Tables::build(&cfg.vips, |_, _| true);
    let opts = XdpOptions {
        interface: "lba".into(),
        mode: Mode::Generic,
    };
    let mut prog = XdpBalancer::load(&cfg, &opts).unwrap();
    prog.sync(&cfg, &all).unwrap();
    let mut oracle = Conntrack::new(1 << 16, std::time::Duration::from_secs(300));

    // 1,000 flows from 100 clients: the program picks the oracle's backend and writes exactly the
    // oracle's packet.
    let flows: Vec<(Ipv4Addr, u16)> = (0..1000u32)
        .map(|i| {
            (
                Ipv4Addr::new(10, 2, (i / 10 % 250) as u8, (i % 10 + 2) as u8),
                20_000 + (i * 7 % 40_000) as u16,
            )
        })
        .collect();
    let check_to = |prog: &mut XdpBalancer,
                    oracle: &mut Conntrack,
                    t: &Tables,
                    dst: Ipv4Addr,
                    (src, sport): (Ipv4Addr, u16)|
     -> Ipv4Addr {
        let f = frame(src, sport, dst, 60);
        let (action, out) = prog.test_run(&f, ifindex).unwrap();
        if action != XDP_TX {
            let m = causeway_l4lb::metrics::Metrics::default();
            let mut r = prometheus_client::registry::Registry::default();
            m.register(&mut r);
            prog.collect(&m);
            panic!(
                "{src}:{sport}: action {action}; counters:\n{}",
                causeway_l4lb::metrics::encode(&r)
            );
        }
        let (_, key) = packet::flow_key(&f[14..]).unwrap();
        let Decision::Forward { backend, .. } = pick(t, oracle, &key, Instant::now()) else {
            panic!("the oracle found no backend");
        };
        let mut want = vec![0u8; 80];
        let len = packet::encapsulate(&f[14..], LB, backend, &mut want).unwrap();
        assert_eq!(&out[14..], &want[..len], "{src}:{sport} to {backend}");
        assert_eq!(&out[0..6], &mac(backend.octets()[3]), "destination MAC");
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        backend
    };
    let check = |prog: &mut XdpBalancer, oracle: &mut Conntrack, t: &Tables, flow| {
        check_to(prog, oracle, t, VIP, flow)
    };
    let mut before = Vec::new();
    let mut per_backend = std::collections::BTreeMap::<Ipv4Addr, usize>::new();
    for f in &flows {
        let b = check(&mut prog, &mut oracle, &all, *f);
        *per_backend.entry(b).or_default() += 1;
        before.push(b);
    }
    println!("1000 flows through XDP: {per_backend:?}");
    assert_eq!(per_backend.len(), 3);

    // gw1 leaves: its flows re-hash, every other flow keeps its backend (conntrack), in the
    // program as in the oracle.
    let gw1 = Ipv4Addr::new(10, 1, 0, 21);
    let without = Tables::build(&cfg.vips, |_, b| b.address != gw1);
    prog.sync(&cfg, &without).unwrap();
    let mut moved = 0;
    for (f, b) in flows.iter().zip(&before) {
        let now = check(&mut prog, &mut oracle, &without, *f);
        assert_ne!(now, gw1);
        if *b != gw1 {
            assert_eq!(now, *b, "a flow of a healthy backend moved");
        } else {
            moved += 1;
        }
    }
    println!("gw1 removed: {moved} of 1000 flows re-hashed (exactly gw1's)");
    let after_gw1: Vec<Ipv4Addr> = flows
        .iter()
        .map(|f| check(&mut prog, &mut oracle, &without, *f))
        .collect();

    // A second VIP is added in place while gw1 returns to the first: the program keeps its
    // conntrack, so the flows that moved off gw1 stay where they are (Maglev alone would send
    // them back to gw1), exactly as in the oracle; the new VIP forwards like the oracle too.
    let cfg2 = config::file::parse(
        r#"
vips:
  - name: web
    address: 10.9.0.10
    ports: [80]
    backends:
      - address: 10.1.0.21
      - address: 10.1.0.22
        weight: 2
      - address: 10.1.0.23
    healthCheck: {type: NONE}
  - name: api
    address: 10.9.0.11
    ports: [80]
    tableSize: 1009
    backends: [{address: 10.1.0.22}, {address: 10.1.0.23}]
    healthCheck: {type: NONE}
"#,
    )
    .unwrap();
    let api = Ipv4Addr::new(10, 9, 0, 11);
    let both = Tables::build(&cfg2.vips, |_, _| true);
    let capacity = prog.capacity();
    let started = Instant::now();
    prog.sync(&cfg2, &both).unwrap();
    println!(
        "in-place sync: api added (1,009 slots) and web's table rewritten (65,537 slots) in {:?}",
        started.elapsed()
    );
    assert_eq!(prog.capacity(), capacity, "the maps were not resized");
    for (f, b) in flows.iter().zip(&after_gw1) {
        let now = check(&mut prog, &mut oracle, &both, *f);
        assert_eq!(
            now, *b,
            "a tracked flow changed backend when a VIP was added"
        );
    }
    assert!(moved > 0);
    let mut api_backends = std::collections::BTreeSet::new();
    for f in flows.iter().take(200) {
        api_backends.insert(check_to(&mut prog, &mut oracle, &both, api, *f));
    }
    assert_eq!(api_backends.len(), 2, "{api_backends:?}");
    println!(
        "second VIP added in place: 1000 tracked flows kept, api forwards to {api_backends:?}"
    );

    // Removed again: its packets pass untouched (to the kernel), the first VIP still forwards.
    prog.sync(&cfg, &without).unwrap();
    let to_api = frame(Ipv4Addr::new(10, 2, 0, 2), 40_000, api, 60);
    assert_eq!(prog.test_run(&to_api, ifindex).unwrap(), (XDP_PASS, to_api));
    for (f, b) in flows.iter().zip(&after_gw1).take(100) {
        assert_eq!(check(&mut prog, &mut oracle, &without, *f), *b);
    }

    // Two large tables more than the maglev array holds: the change is refused as a capacity
    // problem (nothing written), and a program reloaded with the grown capacity forwards them.
    let big = config::file::parse(
        r#"
vips:
  - name: web
    address: 10.9.0.10
    ports: [80]
    backends: [{address: 10.1.0.21}, {address: 10.1.0.22}, {address: 10.1.0.23}]
    healthCheck: {type: NONE}
  - name: big1
    address: 10.9.0.12
    ports: [80]
    tableSize: 200003
    backends: [{address: 10.1.0.22}, {address: 10.1.0.23}]
    healthCheck: {type: NONE}
  - name: big2
    address: 10.9.0.13
    ports: [80]
    tableSize: 200009
    backends: [{address: 10.1.0.21}, {address: 10.1.0.23}]
    healthCheck: {type: NONE}
"#,
    )
    .unwrap();
    let big_tables = Tables::build(&big.vips, |_, _| true);
    let have = prog.capacity();
    let Err(xdp::XdpError::Capacity { needed, .. }) = prog.sync(&big, &big_tables) else {
        panic!("three tables of 465,549 slots fit {have}");
    };
    assert_eq!(needed[2], 65537 + 200003 + 200009 + 200009);
    let grown = have.grown(needed);
    assert_eq!(grown.slots, 2 * 665558);
    // Detach first: an interface runs one program.
    drop(prog);
    let mut prog = XdpBalancer::load_with(&big, &opts, grown).unwrap();
    prog.sync(&big, &big_tables).unwrap();
    let mut fresh = Conntrack::new(1 << 16, std::time::Duration::from_secs(300));
    for dst in [Ipv4Addr::new(10, 9, 0, 12), Ipv4Addr::new(10, 9, 0, 13)] {
        for f in flows.iter().take(50) {
            check_to(&mut prog, &mut fresh, &big_tables, dst, *f);
        }
    }

    // Not a VIP, or a port the VIP does not serve: passed untouched.
    let other = frame(Ipv4Addr::new(10, 2, 0, 2), 40_000, LB, 60);
    let (action, out) = prog.test_run(&other, ifindex).unwrap();
    assert_eq!((action, out), (XDP_PASS, other));
    let mut port = frame(Ipv4Addr::new(10, 2, 0, 2), 40_000, VIP, 60);
    port[14 + 22..14 + 24].copy_from_slice(&81u16.to_be_bytes());
    assert_eq!(prog.test_run(&port, ifindex).unwrap().0, XDP_PASS);

    // A full-size packet would exceed the 1500-byte link with its outer header. With Don't
    // Fragment it is answered, back out of the interface it came in on, with exactly the
    // oracle's ICMP fragmentation-needed from the VIP announcing 1480 (1500 minus the outer
    // header), addressed to the MAC it came from.
    let big = frame(Ipv4Addr::new(10, 2, 0, 2), 40_001, VIP, 1500);
    let (action, out) = prog.test_run(&big, ifindex).unwrap();
    assert_eq!(action, XDP_TX);
    let want = packet::frag_needed(&big[14..], VIP, 1480).unwrap();
    assert_eq!(&out[14..], &want[..], "ICMP fragmentation needed");
    assert_eq!(&out[0..6], &big[6..12], "back to the sender's MAC");
    assert_eq!(&out[6..12], &big[0..6], "from the MAC it was sent to");
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    assert_eq!(packet::checksum(&out[14..34]), 0, "IP header checksum");
    assert_eq!(packet::checksum(&out[34..]), 0, "ICMP checksum");
    // Without Don't Fragment: passed to the slow path (the kernel fragments), untouched.
    let mut big_df_off = big.clone();
    big_df_off[14 + 6] = 0;
    let c = packet::checksum(&{
        let mut h = big_df_off[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    big_df_off[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let (action, out) = prog.test_run(&big_df_off, ifindex).unwrap();
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, big_df_off);

    // No healthy backend: dropped.
    prog.sync(&cfg, &Tables::build(&cfg.vips, |_, _| false))
        .unwrap();
    let f = frame(Ipv4Addr::new(10, 2, 0, 3), 40_002, VIP, 60);
    assert_eq!(prog.test_run(&f, ifindex).unwrap().0, 1);
}

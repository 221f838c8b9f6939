//! The operating-system edges of the userspace data path: TUN devices, raw IPIP sockets,
//! `ip` route and address changes, sysctls, and entering a network namespace.
//!
//! No `unsafe` here: TUN devices come from `tun-rs`, raw sockets, `poll` and `setns` from
//! `rustix`. The data paths are plain threads that poll with a short timeout, so they notice
//! shutdown without signals.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, ipproto};

/// Errors of the system edges, each naming what failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// TUN device creation.
    #[error("creating TUN device {name}: {source} (needs root or CAP_NET_ADMIN and /dev/net/tun)")]
    Tun {
        /// Device name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// A raw socket.
    #[error("opening a raw IP protocol {protocol} socket: {source} (needs root or CAP_NET_RAW)")]
    RawSocket {
        /// IP protocol.
        protocol: u8,
        /// The error.
        source: std::io::Error,
    },
    /// An `ip` command.
    #[error("`ip {args}` failed: {message} (is iproute2 installed, and are we root?)")]
    Ip {
        /// The arguments.
        args: String,
        /// stderr or the spawn error.
        message: String,
    },
    /// A sysctl write.
    #[error("setting sysctl {path} = {value}: {source}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The value.
        value: String,
        /// The error.
        source: std::io::Error,
    },
    /// Entering a network namespace.
    #[error("entering network namespace {name}: {source}")]
    Netns {
        /// The namespace name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A TUN device (layer 3, no packet-information header), blocking, read with a poll timeout so
/// that a data-path thread can notice shutdown.
pub struct Tun {
    dev: tun_rs::SyncDevice,
    name: String,
}

impl Tun {
    /// Creates (or opens) TUN device `name` with `mtu`, up.
    pub fn create(name: &str, mtu: u16) -> Result<Tun, SysError> {
        let dev = tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .enable(true)
            .build_sync()
            .map_err(|source| SysError::Tun {
                name: name.to_owned(),
                source,
            })?;
        // Non-blocking: a busy data path reads without a poll() per packet.
        rustix::io::ioctl_fionbio(dev.as_fd(), true).map_err(|e| SysError::Tun {
            name: name.to_owned(),
            source: e.into(),
        })?;
        Ok(Tun {
            dev,
            name: name.to_owned(),
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet; `Ok(None)` when nothing arrived within `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        match self.dev.recv(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !wait_readable(self.dev.as_fd(), timeout)? {
            return Ok(None);
        }
        match self.dev.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one packet (waiting, bounded, while the device queue is full).
    pub fn send(&self, buf: &[u8]) -> std::io::Result<usize> {
        for _ in 0..100 {
            match self.dev.send(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let ts = Timespec {
                        tv_sec: 0,
                        tv_nsec: 10_000_000,
                    };
                    let mut fds = [PollFd::from_borrowed_fd(self.dev.as_fd(), PollFlags::OUT)];
                    let _ = rustix::event::poll(&mut fds, Some(&ts));
                }
                r => return r,
            }
        }
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

/// Waits until `fd` is readable or `timeout` passes; returns whether it is readable.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A raw IPv4 socket for IP protocol 4 (IPIP), blocking.
///
/// Without `IP_HDRINCL`, [`RawIpip::send_to`] makes the kernel add the outer header (source: the
/// route's preferred address) and fragment it when it exceeds the path MTU; [`RawIpip::recv`]
/// returns whole IPv4 packets, outer header included.
pub struct RawIpip {
    fd: OwnedFd,
}

impl RawIpip {
    /// Opens the socket. `rcvbuf` > 0 forces the receive buffer (SO_RCVBUFFORCE): when the
    /// queue overflows the kernel drops and answers with ICMP protocol-unreachable.
    pub fn open(rcvbuf: usize) -> Result<RawIpip, SysError> {
        let err = |source: std::io::Error| SysError::RawSocket {
            protocol: 4,
            source,
        };
        let fd: OwnedFd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(ipproto::IPIP),
        )
        .map_err(|e| err(e.into()))?;
        if rcvbuf > 0 {
            rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, rcvbuf)
                .map_err(|e| err(e.into()))?;
        }
        Ok(RawIpip { fd })
    }

    /// Sends `inner` to `backend`, IPIP-encapsulated by the kernel.
    pub fn send_to(&self, inner: &[u8], backend: Ipv4Addr) -> std::io::Result<usize> {
        Ok(rustix::net::sendto(
            &self.fd,
            inner,
            SendFlags::empty(),
            &SocketAddrV4::new(backend, 0),
        )?)
    }

    /// Receives one packet (outer header included); `Ok(None)` when nothing arrived within
    /// `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        match rustix::net::recv(&self.fd, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        if !wait_readable(self.fd.as_fd(), timeout)? {
            return Ok(None);
        }
        match rustix::net::recv(&self.fd, buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), SysError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SysError::Ip {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SysError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Writes `value` to `/proc/sys/<key with dots as slashes>`.
pub fn sysctl(key: &str, value: &str) -> Result<(), SysError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|source| SysError::Sysctl {
        path,
        value: value.to_owned(),
        source,
    })
}

/// Moves the calling thread into network namespace `name` (`/run/netns/NAME`, as made by
/// `ip netns add`). Sockets and devices the thread creates afterwards belong to it; threads it
/// spawns inherit it.
pub fn enter_netns(name: &str) -> Result<(), SysError> {
    let err = |source| SysError::Netns {
        name: name.to_owned(),
        source,
    };
    let f = std::fs::File::open(format!("/run/netns/{name}")).map_err(err)?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| err(e.into()))
}

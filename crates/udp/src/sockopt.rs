//! Socket options the drivers set: integer options and `SO_REUSEPORT` group steering.

use std::os::fd::AsRawFd;

/// `setsockopt` with an `int` value; whether the kernel accepted it.
#[cfg(target_os = "linux")]
pub fn set_int_option(sock: &impl AsRawFd, level: i32, name: i32, value: i32) -> bool {
    let v: libc::c_int = value;
    // SAFETY: setsockopt with a pointer to an int that outlives the call, on a valid fd.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Which socket of a `SO_REUSEPORT` group the kernel hands each incoming datagram to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// Every datagram to the group's first socket (the first one bound with the port).
    First,
    /// The kernel's default: by a hash of the source and destination addresses.
    Hash,
}

/// Installs `steering` on the `SO_REUSEPORT` group `sock` belongs to (any member will do;
/// the program applies to the whole group, and replacing it is atomic). Uses a one-instruction
/// classic BPF program: `First` returns index 0; `Hash` returns an index past the end of the
/// group, which makes the kernel fall back to its hash (so it works without
/// `SO_DETACH_REUSEPORT_BPF`, Linux ≥ 5.8). Whether the kernel accepted it (Linux ≥ 4.5).
#[cfg(target_os = "linux")]
pub fn steer_reuseport(sock: &impl AsRawFd, steering: Steering) -> bool {
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let k = match steering {
        Steering::First => 0,
        Steering::Hash => u32::MAX,
    };
    // BPF_RET | BPF_K: return the constant k.
    let mut prog = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k,
    }];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: setsockopt with a pointer to a sock_fprog whose filter array outlives the call
    // (the kernel copies the program), on a valid fd.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        ) == 0
    }
}

/// Not available off Linux: the kernel's default hash stays.
#[cfg(not(target_os = "linux"))]
pub fn steer_reuseport(_sock: &impl AsRawFd, _steering: Steering) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Binds `n` sockets to one port as a SO_REUSEPORT group (first bound = index 0).
    fn reuseport_group(n: usize) -> Vec<UdpSocket> {
        let bind = |port: u16| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            s.set_reuse_port(true)?;
            s.bind(&addr(port).into())?;
            s.set_nonblocking(true)?;
            Ok::<UdpSocket, io::Error>(s.into())
        };
        let first = bind(0).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut v = vec![first];
        for _ in 1..n {
            v.push(bind(port).unwrap());
        }
        v
    }

    /// Sends one datagram from each of `sources` fresh sockets; how many each member got.
    fn deliveries(group: &[UdpSocket], sources: usize) -> Vec<usize> {
        let to = group[0].local_addr().unwrap();
        for _ in 0..sources {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(b"x", to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = [0u8; 16];
        group
            .iter()
            .map(|s| std::iter::from_fn(|| s.recv_from(&mut buf).ok()).count())
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn int_options_report_whether_the_kernel_took_them() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_int_option(&s, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1));
        assert!(!set_int_option(&s, libc::SOL_SOCKET, -1, 1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reuseport_steering_sends_all_to_the_first_socket_then_spreads_again() {
        let group = reuseport_group(2);
        assert!(steer_reuseport(&group[1], Steering::First));
        assert_eq!(deliveries(&group, 40), vec![40, 0]);
        assert!(steer_reuseport(&group[0], Steering::Hash));
        let got = deliveries(&group, 40);
        assert_eq!(got.iter().sum::<usize>(), 40);
        // 40 different source ports all hashing to one socket: odds 2^-39.
        assert!(got[0] > 0 && got[1] > 0, "hash spread {got:?}");
    }
}

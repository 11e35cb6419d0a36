//! `SocketAddr` to and from the kernel's `sockaddr_storage`, for `recvmmsg`/`sendmmsg`.
#![cfg(target_os = "linux")]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The address the kernel wrote into `s`; `None` for a family other than IPv4 and IPv6.
pub(crate) fn sockaddr_to(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `s` for the kernel; returns the length of the `sockaddr` written.
pub(crate) fn sockaddr_from(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sendmmsg` is given for an address reads back as that address (as `recvmmsg`
    /// would report it): port and IP byte order, and the IPv6 flow label and scope id.
    #[test]
    fn socket_addresses_survive_the_round_trip_through_sockaddr_storage() {
        let addrs = [
            SocketAddr::from(([192, 0, 2, 1], 3478)),
            SocketAddr::from(([255, 255, 255, 255], 65535)),
            SocketAddr::V6(SocketAddrV6::new(
                "2001:db8::1:2".parse().unwrap(),
                49152,
                0x000a_bcde,
                7,
            )),
            SocketAddr::from((Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped(), 1)),
        ];
        for a in addrs {
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = sockaddr_from(a, &mut s) as usize;
            let want = match a {
                SocketAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>(),
                SocketAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>(),
            };
            assert_eq!(len, want, "{a}");
            assert_eq!(sockaddr_to(&s), Some(a));
        }
        // SAFETY: as above.
        let unspec: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        assert_eq!(sockaddr_to(&unspec), None);
    }
}

//! Who a packet came from: the client's 5-tuple, the key of its allocation.

use std::net::SocketAddr;

/// How the client reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple as the core sees it: transport, connection (0 for UDP) and source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub transport: Transport,
    pub conn: u64,
    pub remote: SocketAddr,
}

impl ClientId {
    pub fn udp(remote: SocketAddr) -> Self {
        ClientId {
            transport: Transport::Udp,
            conn: 0,
            remote,
        }
    }
}

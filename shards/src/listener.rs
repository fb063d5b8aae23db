//! SO_REUSEPORT listener groups: one listening socket per shard, all on one port.
//!
//! The kernel spreads incoming connections over the group by a hash of the 4-tuple, and a
//! connection accepted by a shard's socket stays on that shard for its life. Binding port 0
//! resolves the port with the first socket and binds the rest to the same port, so tests
//! can ask for a free port and still get one group.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog per socket (the kernel caps it at net.core.somaxconn).
pub const DEFAULT_BACKLOG: i32 = 4096;

/// Binds one SO_REUSEPORT listener per shard on `addr`. The sockets are non-blocking and
/// ready to hand to each shard's runtime.
///
/// SO_REUSEPORT would also let a *second process* join the group on that port and silently
/// take a share of the connections; so a fixed port is first probed with a socket that
/// does not set it, which fails if anyone is listening there.
pub fn bind_group(addr: SocketAddr, shards: usize, backlog: i32) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind {addr}: {e} (is another server running on it?)"),
            )
        })?;
    }
    let first = bind_one(addr, backlog)?;
    let addr = first.local_addr()?;
    let mut group = Vec::with_capacity(shards);
    group.push(first);
    for _ in 1..shards {
        group.push(bind_one(addr, backlog)?);
    }
    Ok(group)
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_not_shared() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let taken = group[0].local_addr().unwrap();
        let err = bind_group(taken, 2, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("another server"), "{err}");
        drop(group);
        assert!(
            bind_group(taken, 2, 16).is_ok(),
            "free again once the first group is gone"
        );
    }

    #[test]
    fn port_zero_binds_one_group_on_one_port() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        let ports: Vec<u16> = group
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }
}

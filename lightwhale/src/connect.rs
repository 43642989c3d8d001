//! The daemon's own TCP connections to containers.

use std::{io, net::SocketAddrV4, os::fd::AsRawFd as _};

use lightwhale_common::DAEMON_SOCKET_MARK;
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `target` with [`DAEMON_SOCKET_MARK`], so that the TC program
/// lets the SYN through while it holds the SYNs of clients.
pub async fn connect_marked(target: SocketAddrV4) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let mark = DAEMON_SOCKET_MARK;
    // SAFETY: the descriptor belongs to `socket`, and the option value is a
    // u32 of the given length, as SO_MARK expects.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const mark).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.connect(target.into()).await
}

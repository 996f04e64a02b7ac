//! How an exchange connection notices a peer whose host vanished without closing its
//! sockets (power loss, a network partition): no FIN or RST ever arrives, so both ends set
//! TCP keepalive (probes on an idle connection) and, on Linux, TCP_USER_TIMEOUT (a bound on
//! how long written data may stay unacknowledged, which keepalive does not cover). Either
//! turns the silence into a read or write error, which the exchange reports as a lost
//! connection.
//!
//! This module only sets socket options; it sends no frames.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Socket-level failure detection of one exchange connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Idle time before the first keepalive probe.
    pub keepalive_idle: Duration,
    /// Time between unanswered probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes after which the connection is dead.
    pub keepalive_retries: u32,
    /// How long written data may stay unacknowledged (Linux only).
    pub user_timeout: Duration,
}

impl Default for Liveness {
    /// A silent peer is detected within about 25 s when idle, 30 s with data in flight.
    fn default() -> Self {
        Self {
            keepalive_idle: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            keepalive_retries: 3,
            user_timeout: Duration::from_secs(30),
        }
    }
}

impl Liveness {
    pub(crate) fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let socket = SockRef::from(stream);
        let keepalive = TcpKeepalive::new().with_time(self.keepalive_idle);
        #[cfg(target_os = "linux")]
        let keepalive = keepalive.with_interval(self.keepalive_interval).with_retries(self.keepalive_retries);
        socket.set_tcp_keepalive(&keepalive)?;
        #[cfg(target_os = "linux")]
        socket.set_tcp_user_timeout(Some(self.user_timeout))?;
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_options_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let liveness = Liveness {
            keepalive_idle: Duration::from_secs(7),
            keepalive_interval: Duration::from_secs(2),
            keepalive_retries: 4,
            user_timeout: Duration::from_millis(12_000),
        };
        liveness.apply(&stream).expect("apply");
        let socket = SockRef::from(&stream);
        assert!(socket.keepalive().expect("keepalive"));
        assert_eq!(socket.tcp_keepalive_time().expect("time"), Duration::from_secs(7));
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), Duration::from_secs(2));
        assert_eq!(socket.tcp_keepalive_retries().expect("retries"), 4);
        assert_eq!(socket.tcp_user_timeout().expect("user timeout"), Some(Duration::from_millis(12_000)));
    }
}

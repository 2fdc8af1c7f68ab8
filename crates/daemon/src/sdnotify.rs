//! systemd's readiness protocol: one datagram to `$NOTIFY_SOCKET` per state change (`READY=1`,
//! `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`).
//!
//! Written by hand (a dozen lines) rather than pulling a crate. `herald serve` calls it; outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing. It does not implement file-descriptor passing.

use std::time::Duration;

/// Send `state` (newline-separated `KEY=value` pairs) to the service manager; `false` when there is none or
/// the datagram could not be sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    notify_to(&path, state)
}

/// Send `state` to the socket named like `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) -> bool {
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return false };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux): '@' stands for the leading NUL byte.
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(addr) => socket.send_to_addr(state.as_bytes(), &addr),
            Err(e) => Err(e),
        }
    } else {
        socket.send_to(state.as_bytes(), path)
    };
    if let Err(e) = &sent {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
    sent.is_ok()
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    fn received(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 128];
        let n = listener.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        assert!(notify_to(path.as_os_str(), "READY=1\nSTATUS=serving"));
        assert_eq!(received(&listener), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("herald-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        assert!(notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1"));
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_reported_not_fatal() {
        assert!(!notify_to(std::ffi::OsStr::new("/nonexistent/herald/notify"), "READY=1"));
    }
}

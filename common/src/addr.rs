//! Node addresses: the `host:port` a node advertises to others, and the socket it listens on.
//!
//! The positional `OWN_HOST:PORT` argument is what other nodes use to reach a node. By default a
//! node listens on all interfaces at that port; `--listen` overrides it. Port 0 lets the system
//! pick a free port, which is then advertised.

use std::net::SocketAddr;

/// A `host:port` that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not HOST:PORT (for example localhost:7001)")]
pub struct BadAddr(pub String);

/// Splits `host:port` (host may be a name, IPv4, or `[IPv6]`).
pub fn split(addr: &str) -> Result<(&str, u16), BadAddr> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| BadAddr(addr.to_owned()))?;
    let port = port.parse().map_err(|_| BadAddr(addr.to_owned()))?;
    if host.is_empty() {
        return Err(BadAddr(addr.to_owned()));
    }
    Ok((host, port))
}

/// Where to listen: `listen` if given, else all interfaces at the advertised port.
pub fn listen_addr(advertise: &str, listen: Option<SocketAddr>) -> Result<SocketAddr, BadAddr> {
    let (_, port) = split(advertise)?;
    Ok(listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port))))
}

/// The address to advertise once bound: the given one, with the real port if it asked for 0.
pub fn advertised(advertise: &str, bound: SocketAddr) -> Result<String, BadAddr> {
    let (host, port) = split(advertise)?;
    Ok(if port == 0 { format!("{host}:{}", bound.port()) } else { advertise.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_defaults() {
        assert_eq!(split("localhost:7001"), Ok(("localhost", 7001)));
        assert_eq!(split("[::1]:80"), Ok(("[::1]", 80)));
        assert!(split("localhost").is_err());
        assert!(split(":80").is_err());
        assert!(split("host:99999").is_err());
        assert_eq!(listen_addr("example:7001", None).unwrap(), "0.0.0.0:7001".parse().unwrap());
        let explicit = "127.0.0.1:9".parse().unwrap();
        assert_eq!(listen_addr("example:7001", Some(explicit)).unwrap(), explicit);
        assert_eq!(advertised("h:0", "0.0.0.0:4242".parse().unwrap()).unwrap(), "h:4242");
        assert_eq!(advertised("h:7", "0.0.0.0:4242".parse().unwrap()).unwrap(), "h:7");
    }
}

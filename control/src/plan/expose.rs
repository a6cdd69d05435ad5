//! `--expose [LOCAL:]REMOTE[,...]`: which ports of the Service reach which local ports.
//!
//! REMOTE is the Service's `port` (what `kubectl get svc` shows, and what clients dial), or that
//! port's name; it is never the targetPort. LOCAL is the port of the developer's process on
//! 127.0.0.1 and defaults to REMOTE when REMOTE is a number. Resolving REMOTE against the
//! Service, and the targetPort behind it, is [`crate::plan::ports`]'s job; this module only parses.

use std::fmt;

/// One `[LOCAL:]REMOTE` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expose {
    /// Port of the developer's process on 127.0.0.1; `None`: the same number as REMOTE.
    pub local: Option<u16>,
    pub remote: Remote,
}

/// The Service port an [`Expose`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Number(u16),
    /// A Service port's `name`.
    Name(String),
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Number(n) => write!(f, "{n}"),
            Remote::Name(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for Expose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(l) => write!(f, "{l}:{}", self.remote),
            None => write!(f, "{}", self.remote),
        }
    }
}

/// Why an `--expose` item was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--expose {item:?}: {reason}; expected [LOCAL:]REMOTE, e.g. 3001:80 (local port 3001, Service port 80) or 8080")]
pub struct ExposeError {
    pub item: String,
    pub reason: String,
}

fn port(s: &str, what: &str, item: &str) -> Result<u16, ExposeError> {
    let err = |reason: String| ExposeError {
        item: item.to_string(),
        reason,
    };
    match s.parse::<u32>() {
        Ok(0) => Err(err(format!("{what} port 0 is not a port"))),
        Ok(n) => u16::try_from(n).map_err(|_| err(format!("{what} port {n} is above 65535"))),
        Err(_) => Err(err(format!("{what} port {s:?} is not a number"))),
    }
}

/// A Service port name as Kubernetes allows it (IANA_SVC_NAME): up to 15 lower-case letters,
/// digits and '-', at least one letter, no '-' at either end or twice in a row.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

impl std::str::FromStr for Expose {
    type Err = ExposeError;

    /// One item, `3001:80`, `80`, or `3001:http` (no commas: clap splits the list).
    fn from_str(item: &str) -> Result<Self, ExposeError> {
        let err = |reason: &str| ExposeError {
            item: item.to_string(),
            reason: reason.to_string(),
        };
        let item = item.trim();
        if item.is_empty() {
            return Err(err("empty item"));
        }
        let (local, remote) = match item.split_once(':') {
            Some((_, r)) if r.contains(':') => return Err(err("more than one ':'")),
            Some((l, r)) => (Some(port(l, "LOCAL", item)?), r),
            None => (None, item),
        };
        let remote = if remote.chars().all(|c| c.is_ascii_digit()) && !remote.is_empty() {
            Remote::Number(port(remote, "REMOTE", item)?)
        } else if is_port_name(remote) {
            if local.is_none() {
                return Err(err("a port name needs the local port too, e.g. 3001:http"));
            }
            Remote::Name(remote.to_string())
        } else {
            return Err(err(
                "REMOTE must be the Service's port number or the name of one of its ports",
            ));
        };
        Ok(Expose { local, remote })
    }
}

/// Checks a whole list: at least one item, no Service port and no local port twice.
pub fn check_list(list: &[Expose]) -> Result<(), ExposeError> {
    if list.is_empty() {
        return Err(ExposeError {
            item: String::new(),
            reason: "no port given".to_string(),
        });
    }
    for (i, a) in list.iter().enumerate() {
        for b in &list[..i] {
            if a.remote == b.remote {
                return Err(ExposeError {
                    item: a.to_string(),
                    reason: format!("Service port {} is exposed twice", a.remote),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Expose, ExposeError> {
        s.parse()
    }

    #[test]
    fn local_and_remote() {
        assert_eq!(
            parse("3001:80").unwrap(),
            Expose {
                local: Some(3001),
                remote: Remote::Number(80)
            }
        );
        assert_eq!(
            parse("8080").unwrap(),
            Expose {
                local: None,
                remote: Remote::Number(8080)
            }
        );
        assert_eq!(
            parse("3001:http").unwrap().remote,
            Remote::Name("http".into())
        );
        assert_eq!(parse(" 3001:80 ").unwrap().to_string(), "3001:80");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let msg = |s: &str| parse(s).unwrap_err().to_string();
        assert!(msg("").contains("empty item"));
        assert!(msg("0").contains("port 0 is not a port"));
        assert!(msg("70000").contains("REMOTE port 70000 is above 65535"));
        assert!(msg("x:80").contains("LOCAL port \"x\" is not a number"));
        assert!(msg("1:2:3").contains("more than one ':'"));
        assert!(msg("http").contains("needs the local port"));
        assert!(msg("3001:Http").contains("REMOTE must be"));
        assert!(msg("3001:").contains("REMOTE must be"));
        assert!(msg("3001:a-very-long-port-name").contains("REMOTE must be"));
        assert!(msg("x:80").contains("e.g. 3001:80"), "errors show the form");
    }

    #[test]
    fn lists_refuse_duplicates_and_emptiness() {
        let list: Vec<Expose> = ["3001:80", "3002:80"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let e = check_list(&list).unwrap_err().to_string();
        assert!(e.contains("Service port 80 is exposed twice"), "{e}");
        assert!(check_list(&[]).is_err());
        assert!(check_list(&list[..1]).is_ok());
    }

    #[test]
    fn port_names_follow_kubernetes() {
        assert!(is_port_name("http"));
        assert!(is_port_name("grpc-web"));
        assert!(is_port_name("h2"));
        assert!(!is_port_name("80"));
        assert!(!is_port_name("-http"));
        assert!(!is_port_name("a--b"));
        assert!(!is_port_name("abcdefghijklmnop"));
    }
}

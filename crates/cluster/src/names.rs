//! What the cluster's JetStream objects are called, all derived from `[cluster] prefix`, and the encoding of
//! run ids into subject tokens and KV keys.
//!
//! A run id may hold any character; a subject token and a KV key may not hold `.`, `*`, `>`, spaces and the
//! like. [`token`] keeps letters, digits, `-` and `_` and writes every other byte as `=XX` (hex), so the
//! encoding is reversible ([`untoken`]) and two run ids never share a token. This module does no I/O.

/// The names of one cluster's stream, subjects, consumer and buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix everything is named from.
    pub prefix: String,
}

impl Names {
    /// Names for `prefix` (checked by the configuration: letters, digits, `-`, `_`).
    pub fn new(prefix: &str) -> Names {
        Names { prefix: prefix.to_owned() }
    }

    /// The stream of events: `<prefix>-events`.
    pub fn stream(&self) -> String {
        format!("{}-events", self.prefix)
    }

    /// The subjects the stream takes: `<prefix>.events.>`.
    pub fn subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The subject of one run's events: `<prefix>.events.<run token>`.
    pub fn subject(&self, run: &str) -> String {
        format!("{}.events.{}", self.prefix, token(run))
    }

    /// The durable consumer the leader reads the stream with: `<prefix>-deliver`.
    pub fn consumer(&self) -> String {
        format!("{}-deliver", self.prefix)
    }

    /// A key-value bucket: `<prefix>-<what>` (`leader`, `stops`, `runs`, `jobs`, ...).
    pub fn bucket(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

/// A run id as a subject token or KV key: letters, digits, `-` and `_` kept, every other byte `=XX`.
pub fn token(run: &str) -> String {
    let mut out = String::with_capacity(run.len());
    for b in run.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() { "=".to_owned() } else { out }
}

/// The run id a [`token`] was made from; `None` for text [`token`] does not make.
pub fn untoken(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                let hex = token.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_safe_reversible_and_distinct() {
        let check = |run: &str, expected: &str| {
            assert_eq!(token(run), expected, "{run}");
            assert_eq!(untoken(expected).as_deref(), Some(run), "{expected}");
        };
        check("20261130-1234-0-a1b2", "20261130-1234-0-a1b2");
        check("a.b", "a=2Eb");
        check("a=2Eb", "a=3D2Eb");
        check("sweep *>x", "sweep=20=2A=3Ex");
        check("é", "=C3=A9");
        check("", "=");
        assert_eq!(untoken("a=2"), None);
        assert_eq!(untoken("=ZZ"), None);
        let n = Names::new("team");
        assert_eq!(
            (n.stream(), n.subjects(), n.subject("r.1")),
            ("team-events".into(), "team.events.>".into(), "team.events.r=2E1".into())
        );
        assert_eq!((n.consumer(), n.bucket("leader")), ("team-deliver".into(), "team-leader".into()));
    }
}

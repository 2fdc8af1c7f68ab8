//! [`Secret`]: a string that never shows itself in logs, `Debug` output or error messages.
//!
//! Tokens, passwords and webhook URLs are read from configuration into a `Secret`; code that must send the
//! value calls [`Secret::expose`] at the last moment. It deliberately implements neither `Serialize` nor
//! `Deref<Target = str>`, so a secret cannot leak by accident through a log line, a status page or a
//! formatted error.

use serde::{Deserialize, Deserializer};

/// A secret string. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the moment it is sent. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:#?}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let shown = format!("{:?}", Holder { token: s.clone() });
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn deserializes_from_a_string_only() {
        #[derive(Deserialize)]
        struct T {
            token: Secret,
        }
        let t: T = toml::from_str("token = \"abc\"").expect("a string is a valid secret");
        assert_eq!(t.token.expose(), "abc");
        let err = toml::from_str::<T>("token = 12").err().expect("an integer is not a secret");
        assert!(err.to_string().contains("string"), "{err}");
    }
}

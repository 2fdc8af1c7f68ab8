//! Numbers on the wire. JSON has no NaN or infinity, yet a loss can be either: loss-like fields ([`loose`])
//! write a non-finite value as the string `"NaN"`, `"Infinity"` or `"-Infinity"` and read it back; every other
//! float ([`finite`]) must be a finite JSON number.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A float that may be non-finite, in the loose wire form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Loose(pub f64);

impl Serialize for Loose {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f64(v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a number, "NaN", "Infinity" or "-Infinity""#)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Loose, E> {
                Ok(Loose(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Loose, E> {
                Ok(Loose(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Loose, E> {
                Ok(Loose(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Loose, E> {
                match v {
                    "NaN" => Ok(Loose(f64::NAN)),
                    "Infinity" => Ok(Loose(f64::INFINITY)),
                    "-Infinity" => Ok(Loose(f64::NEG_INFINITY)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A float that must be finite on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Finite(f64);

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() {
            Ok(Finite(v))
        } else {
            Err(serde::de::Error::custom(format!("expected a finite number, found {v}")))
        }
    }
}

pub(crate) mod loose {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        Loose(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Loose::deserialize(d).map(|l| l.0)
    }
}

pub(crate) mod loose_opt {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(Loose).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<Loose>::deserialize(d).map(|l| l.map(|l| l.0))
    }
}

pub(crate) mod finite {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            Err(serde::ser::Error::custom(format!("expected a finite number, found {v}")))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Finite::deserialize(d).map(|f| f.0)
    }
}

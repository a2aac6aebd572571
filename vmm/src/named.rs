//! The words the named enums (`abi::named_enum!`) share, and how the
//! report spells an `Option` of one: the value's name, or a word for none
//! (`auto` for a choice left to the VMM, `none` for a profile no run
//! chose). The enums' own names live in their declarations.

use abi::named::Named;
use serde::{Deserialize, Deserializer, Serializer};

/// The choice left to the VMM (`--cpu-profile auto`, `--pending auto`).
pub const AUTO: &str = "auto";
/// No value at all (the `cpu_profile` of a refused run).
pub const NONE: &str = "none";

fn serialize_or<T: Named, S: Serializer>(
    value: &Option<T>,
    none: &'static str,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.map_or(none, T::as_str))
}

fn deserialize_or<'de, T: Named, D: Deserializer<'de>>(
    none: &str,
    d: D,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(d)?;
    if text == none {
        return Ok(None);
    }
    T::from_name(&text)
        .map(Some)
        .ok_or_else(|| serde::de::Error::unknown_variant(&text, T::NAMES))
}

/// `Option<T>` as T's name, or `auto` for `None`
/// (`#[serde(with = "crate::named::auto_or")]`).
pub mod auto_or {
    use super::*;

    /// Writes the name, or `auto`.
    pub fn serialize<T: Named, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        serialize_or(v, AUTO, s)
    }

    /// Reads a name, or `auto`.
    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        deserialize_or(AUTO, d)
    }
}

/// `Option<T>` as T's name, or `none` for `None`
/// (`#[serde(with = "crate::named::none_or")]`).
pub mod none_or {
    use super::*;

    /// Writes the name, or `none`.
    pub fn serialize<T: Named, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        serialize_or(v, NONE, s)
    }

    /// Reads a name, or `none`.
    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        deserialize_or(NONE, d)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Backing, CpuProfile, PendingMechanism};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fields {
        backing: Backing,
        #[serde(with = "super::auto_or")]
        pending: Option<PendingMechanism>,
        #[serde(with = "super::none_or")]
        profile: Option<CpuProfile>,
    }

    #[test]
    fn names_and_the_words_for_none_round_trip() {
        for (v, text) in [
            (
                Fields {
                    backing: Backing::OnTouch,
                    pending: None,
                    profile: None,
                },
                r#"{"backing":"on-touch","pending":"auto","profile":"none"}"#,
            ),
            (
                Fields {
                    backing: Backing::Populate,
                    pending: Some(PendingMechanism::UffdPoison),
                    profile: Some(CpuProfile::PvmNative),
                },
                r#"{"backing":"populate","pending":"uffd-poison","profile":"pvm-native"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), text);
            assert_eq!(serde_json::from_str::<Fields>(text).unwrap(), v);
        }
        let bad = r#"{"backing":"lazy","pending":"auto","profile":"none"}"#;
        let e = serde_json::from_str::<Fields>(bad).unwrap_err().to_string();
        assert!(
            e.contains("unknown variant `lazy`, expected `populate` or `on-touch`"),
            "{e}"
        );
        let bad = r#"{"backing":"populate","pending":"none","profile":"auto"}"#;
        assert!(serde_json::from_str::<Fields>(bad).is_err());
    }
}

//! `named_enum!`: an enum whose variants each have a name (and, with a
//! `repr`, a wire id) declared once, next to the variant. It generates the
//! enum, `ALL` (every variant, in declaration order), `NAMES` (their
//! names, in the same order), `as_str`, `from_name`, `Display`, the
//! [`Named`] trait and, with a `repr`, `from_id` and `id`: every direction
//! of each table comes from one list, so they cannot disagree. A name is
//! any constant `&'static str` expression: a literal, or another named
//! enum's `as_str()` when two enums share a name.
//!
//! With the `serde` feature (host builds only: the guests never enable
//! it) every named enum also serialises as its name and deserialises from
//! it, with serde's usual `unknown variant` error for any other text.

/// What every `named_enum!` enum offers, for code generic over them (the
/// host's command-line parsers and report fields).
pub trait Named: Copy + 'static {
    /// Every variant, in declaration order.
    const ALL: &'static [Self];
    /// Every variant's name, in the same order.
    const NAMES: &'static [&'static str];
    /// The variant's name.
    fn as_str(self) -> &'static str;
    /// The variant named `name`, if any.
    fn from_name(name: &str) -> Option<Self>;
}

#[cfg(feature = "serde")]
#[doc(hidden)]
pub use serde as __serde;

/// Serialises a named enum as its name (for `#[serde(with = "abi::named")]`;
/// with the `serde` feature every named enum already implements
/// `Serialize` this way).
#[cfg(feature = "serde")]
pub fn serialize<T: Named, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_str())
}

/// Deserialises a named enum from its name; any other text is serde's
/// `unknown variant` error listing the names.
#[cfg(feature = "serde")]
pub fn deserialize<'de, T: Named, D: serde::Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    struct ByName<T>(core::marker::PhantomData<T>);
    impl<T: Named> serde::de::Visitor<'_> for ByName<T> {
        type Value = T;
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("one of the names ")?;
            for (i, name) in T::NAMES.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}`{name}`")?;
            }
            Ok(())
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            T::from_name(v).ok_or_else(|| E::unknown_variant(v, T::NAMES))
        }
    }
    d.deserialize_str(ByName(core::marker::PhantomData))
}

/// The `Serialize` and `Deserialize` impls of a named enum (nothing
/// without the `serde` feature). Chosen when `abi` is built, so a crate
/// using `named_enum!` needs no feature of its own.
#[cfg(feature = "serde")]
#[doc(hidden)]
#[macro_export]
macro_rules! __named_serde {
    ($name:ident) => {
        impl $crate::named::__serde::Serialize for $name {
            fn serialize<S: $crate::named::__serde::Serializer>(
                &self,
                s: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::named::serialize(self, s)
            }
        }
        impl<'de> $crate::named::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::named::__serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                $crate::named::deserialize(d)
            }
        }
    };
}

/// Without the `serde` feature a named enum has no serde impls.
#[cfg(not(feature = "serde"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __named_serde {
    ($name:ident) => {};
}

/// Declares a named enum (see the module docs).
///
/// `enum Name { Variant => "name", ... }`, or with wire ids
/// `enum Name: u64 { Variant = 1 => "name", ... }`.
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        $crate::named_enum!(@names $name { $($variant => $text),+ });
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal => $text:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $id ),+
        }

        $crate::named_enum!(@names $name { $($variant => $text),+ });

        impl $name {
            /// The variant with wire id `id`; `None` for ids this ABI
            /// does not define.
            pub const fn from_id(id: $repr) -> Option<Self> {
                match id {
                    $($id => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The variant's wire id.
            pub const fn id(self) -> $repr {
                self as $repr
            }
        }
    };
    (@names $name:ident { $($variant:ident => $text:expr),+ }) => {
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; $crate::named_enum!(@count $($variant)+)] =
                [$($name::$variant),+];

            /// Every variant's name, in declaration order.
            pub const NAMES: [&'static str; $crate::named_enum!(@count $($variant)+)] =
                [$($text),+];

            /// The variant's name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant named `name`, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == name)
            }
        }

        impl $crate::named::Named for $name {
            const ALL: &'static [Self] = &$name::ALL;
            const NAMES: &'static [&'static str] = &$name::NAMES;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn from_name(name: &str) -> Option<Self> {
                $name::from_name(name)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        $crate::__named_serde!($name);
    };
    (@count) => { 0usize };
    (@count $head:ident $($tail:ident)*) => { 1usize + $crate::named_enum!(@count $($tail)*) };
}

#[cfg(test)]
mod tests {
    crate::named_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Plain {
            A => "a",
            B => "bee",
        }
    }

    crate::named_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Wider {
            A => Plain::A.as_str(),
            C => "c",
        }
    }

    crate::named_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Wire: u64 {
            One = 1 => "one",
            Seven = 7 => "seven",
        }
    }

    #[test]
    fn names_and_ids_go_both_ways() {
        assert_eq!(Plain::ALL, [Plain::A, Plain::B]);
        for v in Plain::ALL {
            assert_eq!(Plain::from_name(v.as_str()), Some(v));
        }
        assert_eq!(Plain::from_name("b"), None);
        for v in Wire::ALL {
            assert_eq!(Wire::from_name(v.as_str()), Some(v));
            assert_eq!(Wire::from_id(v.id()), Some(v));
        }
        assert_eq!(Wire::Seven.id(), 7);
        assert_eq!(Wire::from_id(2), None);
    }

    #[test]
    fn names_can_come_from_another_table() {
        assert_eq!(Wider::NAMES, ["a", "c"]);
        assert_eq!(Wider::from_name("a"), Some(Wider::A));
        assert_eq!(Plain::NAMES, ["a", "bee"]);
        let mut text = [0u8; 8];
        let mut w = Buf(&mut text, 0);
        core::fmt::Write::write_fmt(&mut w, format_args!("{}", Plain::B)).unwrap();
        assert_eq!(&text[..3], b"bee");
        fn generic<T: super::Named>() -> usize {
            assert_eq!(T::ALL.len(), T::NAMES.len());
            T::ALL
                .iter()
                .filter(|v| T::from_name(v.as_str()).is_some())
                .count()
        }
        assert_eq!(generic::<Wire>(), 2);
    }

    /// A fixed buffer to format into (`no_std`: no `String`).
    struct Buf<'a>(&'a mut [u8], usize);

    impl core::fmt::Write for Buf<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.1 + s.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
}

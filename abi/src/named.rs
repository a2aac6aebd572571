//! `named_enum!`: an enum whose variants each have a name (and, with a
//! `repr`, a wire id) declared once, next to the variant. It generates the
//! enum, `ALL` (every variant, in declaration order), `as_str`,
//! `from_name` and, with a `repr`, `from_id`: the two directions of each
//! table come from one list, so they cannot disagree.

/// Declares a named enum (see the module docs).
///
/// `enum Name { Variant => "name", ... }`, or with wire ids
/// `enum Name: u64 { Variant = 1 => "name", ... }`.
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; $crate::named_enum!(@count $($variant)+)] =
                [$($name::$variant),+];

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
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $id ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; $crate::named_enum!(@count $($variant)+)] =
                [$($name::$variant),+];

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
}

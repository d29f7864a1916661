//! Protocol codes as newtypes with named values (rustls' `enum_builder!` shape), shared by
//! the NBD and peer-protocol codecs: a code the peer chooses survives decoding even when this
//! implementation does not know it, can be answered, and prints in hex.

/// `wire_code! { /// doc\n Name(u16) { /// doc\n A = 1, ... } }` defines `pub struct Name(pub
/// u16)` with a constant per value, `ALL`, `name()`, and `Debug`/`Display` printing the name
/// or `Name(0x..)`.
macro_rules! wire_code {
    ($(#[$m:meta])* $name:ident($ty:ty) { $($(#[$vm:meta])* $v:ident = $val:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $ty);

        impl $name {
            $($(#[$vm])* pub const $v: $name = $name($val);)*

            /// Every code this implementation knows.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The name, or `None` for a code this implementation does not know.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$v => Some(stringify!($v)),)*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(self, f)
            }
        }
    };
}
pub(crate) use wire_code;

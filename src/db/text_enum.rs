//! Enums stored in text columns (`status`, `role`, `severity`, ...).
//!
//! [`text_enum!`](crate::text_enum) declares such an enum with the text of each variant;
//! the enum then is what a row holds and what a query compares against, on both
//! backends. A stored text that names no variant fails to load the row (INTERNAL, with
//! the value in the log): the data is corrupt, the client did nothing wrong.

/// Declares an enum stored as text: `Variant = "text"` for each variant. Gives `as_str`,
/// `parse`, `ALL`, and diesel's `ToSql`/`FromSql` for `Text` on every backend.
#[macro_export]
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The text stored for this variant.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The variant stored as `raw`, if any.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, DB>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let raw = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    DB,
                >>::from_sql(bytes)?;
                Self::parse(&raw).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($name), " {:?} stored"), raw).into()
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::text_enum! {
        /// A test enum.
        enum Light {
            Red = "red",
            Green = "green",
        }
    }

    #[test]
    fn variants_round_trip_through_their_text() {
        for light in Light::ALL {
            assert_eq!(Light::parse(light.as_str()), Some(*light));
        }
        assert_eq!(Light::parse("blue"), None);
        assert_eq!(Light::Green.as_str(), "green");
    }
}

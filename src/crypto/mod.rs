//! Cryptographic primitives used by domain, auth and events alike: password hashing
//! ([`password`]), keyed message authentication ([`mac`]), opaque client secrets kept as
//! keyed hashes ([`secret_token`]) and [`hex`] encoding.
//!
//! They sit at the bottom of the module graph, beside `error`, and import nothing of the
//! application: the domain hashes passwords at sign-up, auth signs tokens and URLs, and
//! events sign their envelopes, and none of them may reach up into another to do it (that
//! was the `auth` ↔ `domain` import circle).

pub mod mac;
pub mod password;
pub mod secret_token;

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(super::hex(&[]), "");
    }
}
